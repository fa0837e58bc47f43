package replicate

import (
	"testing"
	"time"
)

func TestMirrorBackoff(t *testing.T) {
	for _, c := range []struct {
		fails int
		want  time.Duration
	}{
		{1, 0},
		{2, 2 * time.Second},
		{3, 4 * time.Second},
		{4, 8 * time.Second},
		{10, 5 * time.Minute},
		{100, 5 * time.Minute},
	} {
		if got := mirrorBackoff(c.fails, 2*time.Second); got != c.want {
			t.Errorf("mirrorBackoff(%d) = %s, want %s", c.fails, got, c.want)
		}
	}
}

func TestCaptureDefault(t *testing.T) {
	for _, c := range []struct {
		m    Machine
		want string
	}{
		{Machine{}, CaptureMirror},
		{Machine{Capture: CaptureBitmap}, CaptureBitmap},
		{Machine{Group: "g"}, CaptureMirror},
		{Machine{Group: "g", Capture: CaptureBitmap}, CaptureBitmap},
		{Machine{Group: "g", Capture: CaptureMirror}, CaptureMirror},
	} {
		if got := c.m.capture(); got != c.want {
			t.Errorf("%+v: capture %q, want %q", c.m, got, c.want)
		}
	}
}
