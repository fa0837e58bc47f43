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
