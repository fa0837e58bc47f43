package blob

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Mem is an in-memory Store for tests and benchmarks.
type Mem struct {
	mu      sync.RWMutex
	objects map[string][]byte
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{objects: map[string][]byte{}} }

func (m *Mem) String() string { return "mem:" }

func (m *Mem) Put(ctx context.Context, name string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	if err := checkSize(m, name, int64(len(data))); err != nil {
		return err
	}
	cp := append([]byte(nil), data...)
	m.mu.Lock()
	m.objects[name] = cp
	m.mu.Unlock()
	return nil
}

func (m *Mem) Get(ctx context.Context, name string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	m.mu.RLock()
	data, ok := m.objects[name]
	m.mu.RUnlock()
	if !ok {
		return nil, notExist(m, name)
	}
	if err := checkSize(m, name, int64(len(data))); err != nil {
		return nil, err
	}
	return append([]byte(nil), data...), nil
}

func (m *Mem) GetRange(ctx context.Context, name string, offset, length int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := ValidName(name); err != nil {
		return nil, err
	}
	m.mu.RLock()
	data, ok := m.objects[name]
	m.mu.RUnlock()
	if !ok {
		return nil, notExist(m, name)
	}
	if size := int64(len(data)); offset < 0 || length < 0 || offset > size || length > size-offset {
		return nil, fmt.Errorf("%s: %s: range %d+%d outside object of %d bytes: %w", m, name, offset, length, len(data), ErrOutOfRange)
	}
	return append([]byte(nil), data[offset:offset+length]...), nil
}

func (m *Mem) Stat(ctx context.Context, name string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := ValidName(name); err != nil {
		return Info{}, err
	}
	m.mu.RLock()
	data, ok := m.objects[name]
	m.mu.RUnlock()
	if !ok {
		return Info{}, notExist(m, name)
	}
	return Info{Name: name, Size: int64(len(data))}, nil
}

func (m *Mem) List(ctx context.Context, prefix string, fn func(Info) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.RLock()
	var infos []Info
	for name, data := range m.objects {
		if strings.HasPrefix(name, prefix) {
			infos = append(infos, Info{Name: name, Size: int64(len(data))})
		}
	}
	m.mu.RUnlock()
	for _, info := range infos {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

func (m *Mem) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidName(name); err != nil {
		return err
	}
	m.mu.Lock()
	delete(m.objects, name)
	m.mu.Unlock()
	return nil
}
