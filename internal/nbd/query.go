package nbd

import (
	"context"
	"fmt"
	"net"
	"sort"
)

// List returns the exports a server offers (NBD_OPT_LIST). The export in
// the URI is ignored.
func List(ctx context.Context, rawURL string) ([]ExportEntry, error) {
	var out []ExportEntry
	err := query(ctx, rawURL, func(h *handshake, _ string) (err error) {
		out, err = h.list()
		return err
	})
	return out, err
}

// Info asks about the URI's export without opening it (NBD_OPT_INFO).
func Info(ctx context.Context, rawURL string) (ExportInfo, error) {
	var out ExportInfo
	err := query(ctx, rawURL, func(h *handshake, export string) (err error) {
		if err := h.structuredReplies(); err != nil {
			return err // so the flags say what a structured client gets
		}
		out, err = h.info(optInfo, export)
		return err
	})
	return out, err
}

// ListMetaContexts returns the metadata contexts the server offers for
// the URI's export that match queries (all of them with no queries),
// sorted (NBD_OPT_LIST_META_CONTEXT).
func ListMetaContexts(ctx context.Context, rawURL string, queries ...string) ([]string, error) {
	var out []string
	err := query(ctx, rawURL, func(h *handshake, export string) error {
		if err := h.structuredReplies(); err != nil {
			return err
		}
		if !h.structured {
			return fmt.Errorf("server does not support structured replies, so it has no metadata contexts")
		}
		m, err := h.metaContexts(optListMetaContext, export, queries)
		for name := range m {
			out = append(out, name)
		}
		sort.Strings(out)
		return err
	})
	return out, err
}

// query connects, runs f in the option phase, and aborts the handshake.
func query(ctx context.Context, rawURL string, f func(h *handshake, export string) error) error {
	a, err := ParseURI(rawURL)
	if err != nil {
		return err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, a.Network, a.Addr)
	if err != nil {
		return fmt.Errorf("nbd: connecting to %s: %w", rawURL, err)
	}
	defer conn.Close()
	_, err = withDeadline(ctx, conn, func() (struct{}, error) {
		h := &handshake{r: newReader(conn), w: conn}
		if err := h.start(); err != nil {
			return struct{}{}, err
		}
		if err := f(h, a.Export); err != nil {
			return struct{}{}, err
		}
		h.abort()
		return struct{}{}, nil
	})
	if err != nil {
		return fmt.Errorf("nbd: querying %s: %w", rawURL, err)
	}
	return nil
}
