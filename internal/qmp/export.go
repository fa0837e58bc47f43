package qmp

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// SocketAddress is where an NBD server listens: a unix socket or TCP.
type SocketAddress struct {
	Type string // "unix" or "inet"
	Path string // unix
	Host string // inet
	Port string // inet
}

// UnixSocket is a unix socket address.
func UnixSocket(path string) SocketAddress { return SocketAddress{Type: "unix", Path: path} }

// InetSocket is a TCP address.
func InetSocket(host string, port int) SocketAddress {
	return SocketAddress{Type: "inet", Host: host, Port: strconv.Itoa(port)}
}

func (a SocketAddress) String() string {
	if a.Type == "unix" {
		return "unix:" + a.Path
	}
	return net.JoinHostPort(a.Host, a.Port)
}

// URI is the NBD URI of an export served at a, as qemu-img, qemu-io and
// libnbd tools accept it.
func (a SocketAddress) URI(export string) string {
	if a.Type == "unix" {
		return "nbd+unix:///" + url.PathEscape(export) + "?socket=" + url.QueryEscape(a.Path)
	}
	return "nbd://" + net.JoinHostPort(a.Host, a.Port) + "/" + url.PathEscape(export)
}

// legacy is the SocketAddressLegacy form nbd-server-start takes: {type, data}.
func (a SocketAddress) legacy() (map[string]any, error) {
	switch a.Type {
	case "unix":
		return map[string]any{"type": "unix", "data": map[string]string{"path": a.Path}}, nil
	case "inet":
		return map[string]any{"type": "inet", "data": map[string]string{"host": a.Host, "port": a.Port}}, nil
	}
	return nil, fmt.Errorf("socket address type %q: want unix or inet", a.Type)
}

// NBDServerStart starts QEMU's NBD server (one per QEMU process). Exports
// are then added with BlockExportAdd.
func (m *Monitor) NBDServerStart(ctx context.Context, addr SocketAddress) error {
	legacy, err := addr.legacy()
	if err != nil {
		return fmt.Errorf("starting NBD server: %w", err)
	}
	if err := m.Execute(ctx, "nbd-server-start", map[string]any{"addr": legacy}, nil); err != nil {
		return fmt.Errorf("starting NBD server on %s: %w", addr, err)
	}
	return nil
}

// NBDServerStop stops the NBD server and removes every NBD export.
func (m *Monitor) NBDServerStop(ctx context.Context) error {
	return m.Execute(ctx, "nbd-server-stop", nil, nil)
}

// ExportOptions are the arguments of an NBD block-export-add.
type ExportOptions struct {
	ID       string `json:"id"`        // export id, unique in QEMU
	NodeName string `json:"node-name"` // node to export
	Name     string `json:"name,omitempty"`
	Writable bool   `json:"writable"`
	// Bitmaps are dirty bitmaps served as "qemu:dirty-bitmap:NAME" meta
	// contexts; each must be on the node or in its backing chain, and must
	// be disabled (not recording) when the export is read-only.
	Bitmaps []string `json:"bitmaps,omitempty"`
	// AllocationDepth serves "qemu:allocation-depth".
	AllocationDepth bool   `json:"allocation-depth,omitempty"`
	Description     string `json:"description,omitempty"`
}

// BlockExportAdd adds an NBD export to the running NBD server.
func (m *Monitor) BlockExportAdd(ctx context.Context, o ExportOptions) error {
	args := struct {
		Type string `json:"type"`
		ExportOptions
	}{"nbd", o}
	if err := m.Execute(ctx, "block-export-add", args, nil); err != nil {
		return fmt.Errorf("exporting node %s as %q: %w", o.NodeName, o.Name, err)
	}
	return nil
}

// BlockExportDel removes an export and waits for BLOCK_EXPORT_DELETED. With
// hard, connected clients are disconnected; otherwise QEMU refuses while
// clients are connected.
func (m *Monitor) BlockExportDel(ctx context.Context, id string, hard bool) error {
	sub := m.Events("BLOCK_EXPORT_DELETED")
	defer sub.Close()
	args := map[string]any{"id": id}
	if hard {
		args["mode"] = "hard"
	}
	if err := m.Execute(ctx, "block-export-del", args, nil); err != nil {
		return fmt.Errorf("removing export %s: %w", id, err)
	}
	_, err := WaitEvent(ctx, sub, func(ev Event) bool {
		var d struct {
			ID string `json:"id"`
		}
		return ev.Decode(&d) == nil && d.ID == id
	})
	if err != nil {
		return fmt.Errorf("removing export %s: %w", id, err)
	}
	return nil
}

// BlockExportInfo is one export (query-block-exports).
type BlockExportInfo struct {
	ID           string `json:"id"`
	Type         string `json:"type"`
	NodeName     string `json:"node-name"`
	ShuttingDown bool   `json:"shutting-down"`
}

// QueryBlockExports lists the exports.
func (m *Monitor) QueryBlockExports(ctx context.Context) ([]BlockExportInfo, error) {
	var out []BlockExportInfo
	if err := m.Execute(ctx, "query-block-exports", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}
