package vaultcopy

import (
	"context"
	"sync/atomic"

	"lifeboat/internal/blob"
)

// meter is a blob.Store that counts the bytes and requests that pass
// through it, so that a copy reports exactly what it moved.
type meter struct {
	blob.Store
	read, written atomic.Int64 // payload bytes of successful calls
	gets, puts    atomic.Int64 // successful Get/GetRange and Put calls
}

func newMeter(s blob.Store) *meter { return &meter{Store: s} }

func (m *meter) Put(ctx context.Context, name string, data []byte) error {
	err := m.Store.Put(ctx, name, data)
	if err == nil {
		m.written.Add(int64(len(data)))
		m.puts.Add(1)
	}
	return err
}

func (m *meter) Get(ctx context.Context, name string) ([]byte, error) {
	data, err := m.Store.Get(ctx, name)
	if err == nil {
		m.read.Add(int64(len(data)))
		m.gets.Add(1)
	}
	return data, err
}

func (m *meter) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	data, err := m.Store.GetRange(ctx, name, offset, length)
	if err == nil {
		m.read.Add(int64(len(data)))
		m.gets.Add(1)
	}
	return data, err
}
