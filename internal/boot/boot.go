// Package boot starts machines from their definitions (lifeboat.machine/v1,
// docs/definition.md): Command turns a definition into the argv of
// qemu-system-x86_64 — CPUs, memory, firmware, disks in boot order on
// their bus, NICs with their MACs, a QMP socket and a guest-agent channel
// — as a pure function; Start runs it and Machine watches it.
package boot

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"lifeboat/internal/recovery"
)

// ErrInvalid marks a definition or options that cannot be started.
var ErrInvalid = errors.New("cannot build the machine's command line")

// Drive overrides where a definition disk's data is: the image a
// restore wrote, or an instant restore's overlay.
type Drive struct {
	File   string
	Format string // raw or qcow2
}

// Options say how to start a machine beyond its definition.
type Options struct {
	// QEMU is the emulator (default qemu-system-x86_64).
	QEMU string
	// Accel is kvm, tcg, or "" for KVM where the host has it, else TCG.
	Accel string
	// Network is none (no NIC at all), user (QEMU's user-mode NAT, no
	// host set-up) or bridge:NAME (a tap on host bridge NAME, through
	// qemu-bridge-helper). Default none: a recovered machine must not
	// appear on the original's network by surprise.
	Network string
	// VNC is a VNC display (127.0.0.1:0); empty: no display.
	VNC string
	// SerialLog receives the serial console; empty: it is dropped.
	SerialLog string
	// QMPSocket and GuestAgentSocket are unix socket paths QEMU listens
	// on; the guest agent channel is org.qemu.guest_agent.0.
	QMPSocket, GuestAgentSocket string
	// Drives override the definition disks' files by disk name.
	Drives map[string]Drive
	// Kernel, Initrd and Append boot a kernel directly instead of the
	// firmware booting from disk.
	Kernel, Initrd, Append string
	// UEFICode is the UEFI firmware for firmware "uefi" (default
	// /usr/share/OVMF/OVMF_CODE.fd).
	UEFICode string
	// StopOnError pauses the guest on a disk read or write error rather
	// than passing the error to it (virtio, scsi, sata, ide): an instant
	// restore whose export went away stops the guest cleanly, to go on
	// when the export is back, instead of corrupting its filesystems.
	StopOnError bool
	// Extra arguments appended as they are.
	Extra []string
}

// Defaults.
const (
	DefaultQEMU     = "qemu-system-x86_64"
	DefaultUEFICode = "/usr/share/OVMF/OVMF_CODE.fd"
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), ErrInvalid)
}

// Command returns the argv (argv[0] the emulator) that starts def. Every
// disk must have a file, from the definition (restore writes it) or
// opts.Drives. Disks are attached in boot order: those with a boot_order,
// lowest first, get QEMU boot indexes; the others follow in definition
// order.
func Command(def *recovery.Definition, opts Options) ([]string, error) {
	if def == nil {
		return nil, invalid("no definition")
	}
	argv := []string{cmp.Or(opts.QEMU, DefaultQEMU), "-name", "guest=" + esc(def.Name), "-nodefaults", "-no-user-config"}
	switch opts.Accel {
	case "":
		argv = append(argv, "-accel", "kvm", "-accel", "tcg")
	case "kvm", "tcg":
		argv = append(argv, "-accel", opts.Accel)
	default:
		return nil, invalid("accelerator %q: want kvm or tcg", opts.Accel)
	}
	// A definition recorded from a storage daemon has no CPUs or memory.
	cpus, mem := max(def.CPUs, 1), def.MemoryMiB
	if mem < 16 {
		mem = 512
	}
	argv = append(argv, "-machine", "q35", "-smp", strconv.Itoa(cpus), "-m", strconv.Itoa(mem))
	if opts.Accel == "kvm" {
		argv = append(argv, "-cpu", "host")
	}
	switch def.Firmware {
	case "", "bios":
	case "uefi":
		argv = append(argv, "-drive", "if=pflash,format=raw,readonly=on,file="+esc(cmp.Or(opts.UEFICode, DefaultUEFICode)))
	default:
		return nil, invalid("firmware %q: want bios or uefi", def.Firmware)
	}
	if opts.Kernel != "" {
		argv = append(argv, "-kernel", opts.Kernel)
		if opts.Initrd != "" {
			argv = append(argv, "-initrd", opts.Initrd)
		}
		if opts.Append != "" {
			argv = append(argv, "-append", opts.Append)
		}
	} else if opts.Initrd != "" || opts.Append != "" {
		return nil, invalid("an initrd or a kernel command line needs a kernel")
	}
	disks, err := diskArgs(def, opts.Drives, opts.StopOnError)
	if err != nil {
		return nil, err
	}
	argv = append(argv, disks...)
	nics, err := nicArgs(def.NICs, opts.Network)
	if err != nil {
		return nil, err
	}
	argv = append(argv, nics...)
	if opts.VNC != "" {
		argv = append(argv, "-vga", "std", "-vnc", opts.VNC)
	} else {
		argv = append(argv, "-display", "none")
	}
	if opts.SerialLog != "" {
		argv = append(argv, "-chardev", "file,id=serial0,path="+esc(opts.SerialLog), "-serial", "chardev:serial0")
	}
	if opts.QMPSocket != "" {
		argv = append(argv, "-chardev", "socket,id=qmp,path="+esc(opts.QMPSocket)+",server=on,wait=off", "-mon", "chardev=qmp,mode=control")
	}
	if opts.GuestAgentSocket != "" {
		argv = append(argv, "-device", "virtio-serial-pci,id=vser0",
			"-chardev", "socket,id=qga0,path="+esc(opts.GuestAgentSocket)+",server=on,wait=off",
			"-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0")
	}
	return append(argv, opts.Extra...), nil
}

// bootOrder is the definition's disks in the order they are attached.
func bootOrder(def *recovery.Definition) []recovery.DefinitionDisk {
	disks := slices.Clone(def.Disks)
	// Boot disks first, lowest boot_order first; the rest keep their order.
	slices.SortStableFunc(disks, func(a, b recovery.DefinitionDisk) int {
		switch {
		case a.BootOrder > 0 && b.BootOrder > 0:
			return cmp.Compare(a.BootOrder, b.BootOrder)
		case a.BootOrder > 0:
			return -1
		case b.BootOrder > 0:
			return 1
		}
		return 0
	})
	return disks
}

// NodeName is the QMP node name of the format node of disk name, or ""
// if def has no such disk.
func NodeName(def *recovery.Definition, name string) string {
	for i, d := range bootOrder(def) {
		if d.Name == name {
			return fmt.Sprintf("disk%d", i)
		}
	}
	return ""
}

// diskArgs attaches the disks in boot order.
func diskArgs(def *recovery.Definition, drives map[string]Drive, stopOnError bool) ([]string, error) {
	disks := bootOrder(def)
	for name := range drives {
		if !slices.ContainsFunc(disks, func(d recovery.DefinitionDisk) bool { return d.Name == name }) {
			return nil, invalid("a drive is given for disk %q, which the definition does not have", name)
		}
	}
	var argv []string
	var scsi bool
	ide := 0 // q35's AHCI ports ide.0 .. ide.5
	for i, d := range disks {
		file, format := d.File, d.Format
		if dr, ok := drives[d.Name]; ok {
			file, format = dr.File, dr.Format
		}
		if file == "" {
			return nil, invalid("disk %s names no file: restore the point with --to DIR, whose definition names every image", d.Name)
		}
		if d.Name == "scsi0" || d.Name == "vser0" {
			return nil, invalid("disk %s: the name is taken by a controller lifeboat adds: rename the disk in the definition", d.Name)
		}
		format = cmp.Or(format, "raw")
		if format != "raw" && format != "qcow2" {
			return nil, invalid("disk %s: format %q: want raw or qcow2", d.Name, format)
		}
		node := fmt.Sprintf("disk%d", i)
		bd, _ := json.Marshal(map[string]any{"driver": format, "node-name": node,
			"file": map[string]any{"driver": "file", "filename": file}})
		argv = append(argv, "-blockdev", string(bd))
		dev := ""
		switch cmp.Or(d.Bus, "virtio") {
		case "virtio":
			dev = "virtio-blk-pci,drive=" + node
		case "scsi":
			if !scsi {
				argv = append(argv, "-device", "virtio-scsi-pci,id=scsi0")
				scsi = true
			}
			dev = "scsi-hd,bus=scsi0.0,drive=" + node
		case "sata", "ide":
			if ide == 6 {
				return nil, invalid("disk %s: more than 6 sata/ide disks", d.Name)
			}
			dev = fmt.Sprintf("ide-hd,bus=ide.%d,drive=%s", ide, node)
			ide++
		case "nvme":
			dev = "nvme,serial=" + esc(d.Name) + ",drive=" + node
		default:
			return nil, invalid("disk %s: bus %q: want virtio, scsi, sata, ide or nvme", d.Name, d.Bus)
		}
		dev += ",id=" + esc(d.Name) // the qdev id names the disk when the machine is backed up live
		if stopOnError && !strings.HasPrefix(dev, "nvme") {
			dev += ",werror=stop,rerror=stop"
		}
		if d.BootOrder > 0 {
			dev += ",bootindex=" + strconv.Itoa(d.BootOrder)
		}
		argv = append(argv, "-device", dev)
	}
	return argv, nil
}

// nicModels maps a definition's NIC model to a QEMU device.
var nicModels = map[string]string{"": "virtio-net-pci", "virtio": "virtio-net-pci", "virtio-net": "virtio-net-pci",
	"virtio-net-pci": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "vmxnet3": "vmxnet3"}

// nicArgs attaches the NICs to the network asked for.
func nicArgs(nics []recovery.DefinitionNIC, network string) ([]string, error) {
	var backend string
	switch {
	case network == "" || network == "none":
		return nil, nil // no NIC: -nodefaults adds none
	case network == "user":
		backend = "user"
	case strings.HasPrefix(network, "bridge:") && len(network) > len("bridge:"):
		backend = "bridge,br=" + esc(strings.TrimPrefix(network, "bridge:"))
	default:
		return nil, invalid("network %q: want none, user or bridge:NAME", network)
	}
	var argv []string
	for i, n := range nics {
		model, ok := nicModels[strings.ToLower(n.Model)]
		if !ok {
			return nil, invalid("nics[%d]: model %q: want virtio, e1000, e1000e, rtl8139 or vmxnet3", i, n.Model)
		}
		id := fmt.Sprintf("net%d", i)
		argv = append(argv, "-netdev", backend+",id="+id)
		dev := model + ",netdev=" + id
		if n.MAC != "" {
			dev += ",mac=" + esc(n.MAC) // a definition from a replication source is not checked as a vault's is
		}
		argv = append(argv, "-device", dev)
	}
	return argv, nil
}

// esc escapes a value for QEMU's comma-separated option syntax.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// KernelBoot is the direct kernel boot a definition may carry ("kernel",
// "initrd", "cmdline": paths on the host that starts the machine), as
// libvirt's <os><kernel> does; the test VMs boot that way.
type KernelBoot struct {
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// Parse reads a stored definition and the direct kernel boot it may carry.
func Parse(raw json.RawMessage) (*recovery.Definition, KernelBoot, error) {
	var d struct {
		recovery.Definition
		KernelBoot
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, KernelBoot{}, fmt.Errorf("machine definition: %w", err)
	}
	if err := recovery.ValidName("machine", d.Name); err != nil {
		return nil, KernelBoot{}, fmt.Errorf("machine definition: %w", err)
	}
	return &d.Definition, d.KernelBoot, nil
}

// NetworkOf is the Network option that attaches def's NICs as the
// definition says: a bridge its first NIC names, else user-mode NAT;
// none without NICs.
func NetworkOf(def *recovery.Definition) string {
	if len(def.NICs) == 0 {
		return "none"
	}
	if n := def.NICs[0].Network; n != "" && n != "user" {
		return "bridge:" + n
	}
	return "user"
}
