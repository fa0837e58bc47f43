package policy

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	const (
		h   = time.Hour
		min = time.Minute
	)
	tests := []struct {
		in   string
		want time.Duration
	}{
		// Go durations; "m" is minutes.
		{"0", 0},
		{"0s", 0},
		{"90m", 90 * min},
		{"2m", 2 * min},
		{"2m30s", 2*min + 30*time.Second},
		{"36h", 36 * h},
		{"1h30m", 90 * min},
		{"1.5h", 90 * min},
		{"300ms", 300 * time.Millisecond},
		{"+1h", h},
		// Extended form.
		{"7d", 7 * day},
		{"0d", 0},
		{"2w", 14 * day},
		{"1y", 365 * day},
		{"1y2m3d4h", 365*day + 60*day + 3*day + 4*h},
		{"2m3d", 63 * day},
		{"2m0d", 60 * day},
		{"1y30m", 365*day + 900*day}, // after y, m is still months
		{"3d30m", 3*day + 30*min},    // after d, m is minutes
		{"1w2m", 7*day + 2*min},
		{"1d12h30m15s", day + 12*h + 30*min + 15*time.Second},
		{"1y1m1w1d1h1m1s1ms1us1ns", 365*day + 30*day + 7*day + day + h + min + time.Second +
			time.Millisecond + time.Microsecond + time.Nanosecond},
		{"1d5µs", day + 5*time.Microsecond},
		{"1.5d", 36 * h},
		{".5d", 12 * h},
		{"1.d", day},
		{"1d0.5s", day + 500*time.Millisecond},
		{"0.1y", 36*day + 12*h},
		{"+7d", 7 * day},
		{"007d", 7 * day},
		{"106751d", 106751 * day}, // close to the limit of time.Duration
		{"292y", 292 * 365 * day},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestParseDurationErrors(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", "empty"},
		{"-1h", "negative"},
		{"-7d", "negative"},
		{"7", "missing unit"},
		{"d", "expected a number"},
		{"7x", "unknown unit"},
		{"7D", "unknown unit"},
		{"7 d", "unknown unit"},
		{" 7d", "expected a number"},
		{"7days", "unknown unit"},
		{"1d1y", "out of order"},
		{"1d1d", "out of order"},
		{"1m1m1d", "out of order"},
		{"1h30m2d", "out of order"}, // m after h is minutes, then d is out of order
		{"1d-1h", "unknown unit"},
		{"1..5d", "expected a number"},
		{"1.2.3d", "expected a number"},
		{".d", "expected a number"},
		{"++7d", "expected a number"},
		{"106752d", "too long"},
		{"293y", "too long"},
		{"1y" + strings.Repeat("9", 40) + "d", "too long"},
		{"3000000h", "too long"},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", tt.in, got)
			continue
		}
		if !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("ParseDuration(%q): error %q does not contain %q", tt.in, err, tt.msg)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Nanosecond, "0.000000001s"},
		{500 * time.Millisecond, "0.5s"},
		{time.Second, "1s"},
		{30 * time.Minute, "30m"},
		{90 * time.Minute, "1h30m"},
		{time.Hour, "1h"},
		{day, "1d"},
		{2 * day, "2d"},
		{7 * day, "7d"},
		{36 * time.Hour, "1d12h"},
		{day + 30*time.Minute, "1d30m"},
		{day + 1500*time.Millisecond, "1d1.5s"},
		{365 * day, "365d"},
		{math.MaxInt64, "106751d23h47m16.854775807s"},
	}
	for _, tt := range tests {
		got := FormatDuration(tt.d)
		if got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
		back, err := ParseDuration(got)
		if err != nil || back != tt.d {
			t.Errorf("ParseDuration(FormatDuration(%v)) = %v, %v", tt.d, back, err)
		}
	}
}

// FuzzFormatDuration checks that ParseDuration reads back what
// FormatDuration writes, and never panics.
func FuzzFormatDuration(f *testing.F) {
	for _, d := range []int64{0, 1, 1e9, 60e9, 3600e9, 86400e9, 86400e9 + 1, math.MaxInt64} {
		f.Add(d, "7d")
	}
	f.Add(int64(36*time.Hour), "1y2m3d4h")
	f.Add(int64(time.Minute), "1.5m")
	f.Fuzz(func(t *testing.T, n int64, s string) {
		if n >= 0 {
			d := time.Duration(n)
			back, err := ParseDuration(FormatDuration(d))
			if err != nil || back != d {
				t.Fatalf("round trip of %d: %q -> %v, %v", n, FormatDuration(d), back, err)
			}
		}
		if d, err := ParseDuration(s); err == nil && d < 0 {
			t.Fatalf("ParseDuration(%q) = %v, negative", s, d)
		}
	})
}
