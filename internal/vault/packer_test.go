package vault

import "testing"

// A run's first packs are small, so that a small run's packs are uploaded
// while it still reads; from the ninth on they have the vault's size, and
// no pack is smaller than 1 MiB.
func TestPackTarget(t *testing.T) {
	for _, tc := range []struct{ size, n, want int }{
		{16 << 20, 0, 4 << 20}, {16 << 20, 3, 4 << 20}, {16 << 20, 4, 8 << 20}, {16 << 20, 7, 8 << 20},
		{16 << 20, 8, 16 << 20}, {16 << 20, 1000, 16 << 20},
		{1 << 20, 0, 1 << 20}, {2 << 20, 0, 1 << 20}, {2 << 20, 5, 1 << 20}, {2 << 20, 9, 2 << 20},
		{1 << 30, 0, 256 << 20}, {1 << 30, 8, 1 << 30},
	} {
		if got := packTarget(tc.size, tc.n); got != tc.want {
			t.Errorf("packTarget(%d, %d) = %d, want %d", tc.size, tc.n, got, tc.want)
		}
	}
}

// Near a run's expected end the packs shrink to half of what is left,
// down to 1 MiB; without an expectation the target stands.
func TestTailTarget(t *testing.T) {
	for _, tc := range []struct {
		target, len int
		left        int64
		want        int
	}{
		{8 << 20, 0, -1, 8 << 20},        // no expectation
		{8 << 20, 0, 100 << 20, 8 << 20}, // far from the end
		{8 << 20, 1 << 20, 15 << 20, 8 << 20},
		{8 << 20, 1 << 20, 7 << 20, 4 << 20}, // 8 MiB to go in all: half of it
		{8 << 20, 0, 1 << 20, 1 << 20},       // never below 1 MiB
		{8 << 20, 0, 0, 1 << 20},
		{4 << 20, 0, 5 << 20, 2621440},
	} {
		if got := tailTarget(tc.target, tc.len, tc.left); got != tc.want {
			t.Errorf("tailTarget(%d, %d, %d) = %d, want %d", tc.target, tc.len, tc.left, got, tc.want)
		}
	}
}
