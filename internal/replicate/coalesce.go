package replicate

import (
	"container/heap"
	"sort"

	"lifeboat/internal/journal"
)

// piece is one extent of a journal batch once coalesced: the newest
// contents of [Off, Off+Len) of Disk among the batch's records — zeros, or
// the journal's bytes from Src on.
type piece struct {
	Disk     int
	Off, Len int64
	Zero     bool
	Src      int64 // journal position of the byte at Off (data only)
}

// coalesce turns journal records (in journal order) into pieces that do
// not overlap, each byte taken from the newest record that wrote it: a
// batch's records are applied in any order at the site, and a block
// written many times ships once. It sweeps each disk's record boundaries,
// keeping the records covering the current point in a heap by recency.
func coalesce(recs []journal.Record) []piece {
	type bound struct {
		at    int64
		idx   int
		start bool
	}
	byDisk := map[int][]bound{}
	for i, r := range recs {
		if (r.Kind != journal.KindData && r.Kind != journal.KindZero) || r.Len == 0 {
			continue
		}
		byDisk[r.Disk] = append(byDisk[r.Disk], bound{r.Off, i, true}, bound{r.Off + r.Len, i, false})
	}
	disks := make([]int, 0, len(byDisk))
	for d := range byDisk {
		disks = append(disks, d)
	}
	sort.Ints(disks)
	var out []piece
	for _, d := range disks {
		bs := byDisk[d]
		sort.Slice(bs, func(i, j int) bool { return bs[i].at < bs[j].at })
		live := &recency{}
		ended := map[int]bool{}
		for k := 0; k < len(bs); {
			at := bs[k].at
			for ; k < len(bs) && bs[k].at == at; k++ {
				if bs[k].start {
					heap.Push(live, bs[k].idx)
				} else {
					ended[bs[k].idx] = true
				}
			}
			for live.Len() > 0 && ended[(*live)[0]] {
				heap.Pop(live)
			}
			if live.Len() == 0 || k == len(bs) {
				continue
			}
			r := recs[(*live)[0]]
			next := bs[k].at
			p := piece{Disk: d, Off: at, Len: next - at, Zero: r.Kind == journal.KindZero}
			if !p.Zero {
				p.Src = r.Pos + journal.HeaderSize + (at - r.Off)
			}
			// Joined to the previous piece when it continues it.
			if n := len(out); n > 0 {
				q := &out[n-1]
				if q.Disk == d && q.Off+q.Len == at && q.Zero == p.Zero && (p.Zero || q.Src+q.Len == p.Src) {
					q.Len += p.Len
					continue
				}
			}
			out = append(out, p)
		}
	}
	return out
}

// recency is a max-heap of record indexes: the newest record on top.
type recency []int

func (h recency) Len() int           { return len(h) }
func (h recency) Less(i, j int) bool { return h[i] > h[j] }
func (h recency) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *recency) Push(x any)        { *h = append(*h, x.(int)) }
func (h *recency) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
