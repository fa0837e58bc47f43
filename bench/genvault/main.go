// Command genvault fills a lifeboat vault with millions of real chunks
// quickly, for the scale benchmark (bench/scale.sh): every chunk is a
// unique, highly compressible block (a seed and a counter, then zeros), so
// a million 64 KiB chunks are hashed, compressed, sealed and packed in
// seconds and take about 100 MB. The packs, index objects, manifests and
// points are written by lifeboat's own code, so `lifeboat verify` (and
// verify --read-data) accepts the vault.
//
//	genvault -vault DIR -chunks 1000000 [-seed 1] [-per-point 65536]
//	genvault -disk FILE -size 4G [-seed 1]
//
// The first form adds -chunks chunks to an existing vault (passphrase in
// LIFEBOAT_PASSWORD), in packs of 1024 chunks and index objects of 4096
// entries (the shape of a real vault at 256 KiB chunks and 16 MiB packs),
// referenced by points of machines gen-<seed>-<n>, -per-point chunks each.
// The second writes a dense disk image of unique, compressible blocks
// (4 KiB of seeded pseudo-random bytes, then zeros, per 64 KiB).
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"lifeboat/internal/blob"
	"lifeboat/internal/chunk"
	"lifeboat/internal/image"
	"lifeboat/internal/recovery"
	"lifeboat/internal/vault"
)

const (
	packChunks  = 1024
	indexChunks = 4096
)

func main() {
	dir := flag.String("vault", "", "vault directory to fill")
	n := flag.Int("chunks", 0, "chunks to add")
	seed := flag.Uint64("seed", 1, "seed: different seeds give different chunks")
	perPoint := flag.Int("per-point", 65536, "chunks per point")
	disk := flag.String("disk", "", "write a disk image here instead")
	size := flag.String("size", "4G", "disk image size (with -disk)")
	flag.Parse()
	var err error
	switch {
	case *disk != "":
		err = writeDisk(*disk, *size, *seed)
	case *dir != "" && *n > 0:
		err = fill(context.Background(), *dir, *n, *seed, *perPoint)
	default:
		flag.Usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "genvault:", err)
		os.Exit(1)
	}
}

func writeDisk(path, size string, seed uint64) error {
	mult := int64(1)
	switch {
	case strings.HasSuffix(size, "G"):
		mult, size = 1<<30, strings.TrimSuffix(size, "G")
	case strings.HasSuffix(size, "M"):
		mult, size = 1<<20, strings.TrimSuffix(size, "M")
	}
	n, err := strconv.ParseInt(size, 10, 64)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, 0x5ca1e))
	buf := make([]byte, 64<<10)
	for off := int64(0); off < n*mult; off += int64(len(buf)) {
		for i := 0; i < 4096; i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], rng.Uint64())
		}
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Close()
}

func fill(ctx context.Context, dir string, n int, seed uint64, perPoint int) error {
	start := time.Now()
	store, err := blob.NewDir(dir)
	if err != nil {
		return err
	}
	v, err := vault.Open(ctx, store, []byte(os.Getenv("LIFEBOAT_PASSWORD")), vault.Options{})
	if err != nil {
		return err
	}
	cs := v.Config().ChunkSize
	codec := v.Codec()
	ids := make([]chunk.ID, n)
	// Packs are built by workers, each from a range of packChunks chunks;
	// index objects are written by one goroutine as packs arrive.
	type built struct {
		id      chunk.ID
		entries []chunk.PackEntry
	}
	packsN := (n + packChunks - 1) / packChunks
	out := make(chan built, 16)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	setErr := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			block := make([]byte, cs)
			var sealed, scratch []byte
			for p := range work {
				pb := chunk.NewPackBuilder(packChunks * 128)
				for c := p * packChunks; c < min(n, (p+1)*packChunks); c++ {
					binary.LittleEndian.PutUint64(block[0:], seed)
					binary.LittleEndian.PutUint64(block[8:], uint64(c))
					binary.LittleEndian.PutUint64(block[16:], 0x6c696665626f6174) // "lifeboat"
					id := codec.Hasher().Sum(block)
					sealed, scratch = codec.EncodeBlob(sealed[:0], id, block, scratch)
					pb.Add(id, sealed, cs)
					ids[c] = id
				}
				data, id, entries := pb.Finish(codec)
				if err := store.Put(ctx, chunk.PackName(id), data); err != nil {
					setErr(err)
				}
				out <- built{id, entries}
			}
		}()
	}
	go func() {
		for p := 0; p < packsN; p++ {
			work <- p
		}
		close(work)
		wg.Wait()
		close(out)
	}()
	f := &chunk.IndexFile{}
	entries := 0
	flush := func() {
		if len(f.Packs) > 0 {
			if _, err := v.SaveIndexFile(ctx, f); err != nil {
				setErr(err)
			}
		}
		f, entries = &chunk.IndexFile{}, 0
	}
	for b := range out {
		f.Packs = append(f.Packs, chunk.IndexPack{ID: b.id, Entries: b.entries})
		if entries += len(b.entries); entries >= indexChunks {
			flush()
		}
	}
	flush()
	if firstErr != nil {
		return firstErr
	}
	packed := time.Since(start)
	points := 0
	for first := 0; first < n; first += perPoint {
		m := image.NewManifest(int64(min(perPoint, n-first))*int64(cs), cs)
		copy(m.IDs, ids[first:])
		mid, err := image.Save(ctx, v, m)
		if err != nil {
			return err
		}
		machine := fmt.Sprintf("gen-%d-%d", seed, first/perPoint)
		p := &recovery.Point{Machine: machine, Time: time.Now().UTC(), Consistency: recovery.Crash, Host: v.Host(),
			Definition: recovery.DefaultDefinition(machine, []string{"disk0"}, nil),
			Disks: []recovery.Disk{{Name: "disk0", Source: "/dev/null", Size: m.Size, ChunkSize: cs, Manifest: mid,
				Stats: recovery.DiskStats{NewChunks: int64(len(m.IDs)), NewBytes: m.Size}}}}
		if err := recovery.Save(ctx, v, p); err != nil {
			return err
		}
		points++
	}
	fmt.Printf("genvault: %d chunks in %d packs and %d points added to %s in %.1fs (packing %.1fs)\n",
		n, packsN, points, dir, time.Since(start).Seconds(), packed.Seconds())
	return nil
}
