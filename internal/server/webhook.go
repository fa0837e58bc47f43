package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Webhooks delivers alert events to webhook URLs off the scheduler's
// tick: Send only queues, so a webhook that is slow, stalls or is down
// never delays a tick. Each URL has its own bounded queue and sender, so
// one bad endpoint does not hold up the others; a delivery that fails
// (an error, a timeout or a status of 300 or more) is retried with
// backoff, and an event that still fails, or that finds its queue full,
// is logged and dropped — the alert itself stays in the catalog
// (lifeboat alert list).
type Webhooks struct {
	URLs []string
	// HTTP sends; nil means a client with a 10 s timeout per attempt.
	HTTP *http.Client
	Log  *slog.Logger
	// Queue is how many events may wait per URL (default 256).
	Queue int
	// Attempts per event (default 5), the first retry after Backoff
	// (default 1 s), doubling.
	Attempts int
	Backoff  time.Duration

	once   sync.Once
	queues []chan Event
	stop   context.CancelFunc
	wg     sync.WaitGroup
}

func (w *Webhooks) start() {
	w.once.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		w.stop = cancel
		size := w.Queue
		if size <= 0 {
			size = 256
		}
		for _, url := range w.URLs {
			q := make(chan Event, size)
			w.queues = append(w.queues, q)
			w.wg.Add(1)
			go func() { defer w.wg.Done(); w.deliver(ctx, url, q) }()
		}
	})
}

func (w *Webhooks) log() *slog.Logger {
	if w.Log != nil {
		return w.Log
	}
	return slog.Default()
}

// Send queues ev for every URL without waiting.
func (w *Webhooks) Send(ev Event) {
	w.start()
	for i, q := range w.queues {
		select {
		case q <- ev:
		default:
			w.log().Error("webhook queue full: alert event dropped (the alert stays listed)", "url", w.URLs[i], "kind", ev.Kind, "subject", ev.Subject, "event", ev.Event)
		}
	}
}

// Close stops the senders, dropping what is still queued.
func (w *Webhooks) Close() {
	w.start()
	w.stop()
	w.wg.Wait()
}

func (w *Webhooks) deliver(ctx context.Context, url string, q chan Event) {
	client := w.HTTP
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	attempts := max(w.Attempts, 1)
	if w.Attempts <= 0 {
		attempts = 5
	}
	backoff := w.Backoff
	if backoff <= 0 {
		backoff = time.Second
	}
	for {
		var ev Event
		select {
		case <-ctx.Done():
			return
		case ev = <-q:
		}
		body, _ := json.Marshal(ev)
		wait := backoff
		for n := 1; ; n++ {
			err := post(ctx, client, url, body)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if n >= attempts {
				w.log().Error("webhook failed; alert event dropped (the alert stays listed)", "url", url, "kind", ev.Kind, "subject", ev.Subject, "attempts", n, "err", err)
				break
			}
			w.log().Warn("webhook failed; retrying", "url", url, "kind", ev.Kind, "subject", ev.Subject, "attempt", n, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(wait*2, time.Minute)
		}
	}
}

func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook URL unusable: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
