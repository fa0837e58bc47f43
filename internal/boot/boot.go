// Package boot builds the QEMU command line that starts a machine from its
// definition (docs/definition.md): CPUs, memory, firmware, disks on their
// buses in boot order, NICs — under TCG or KVM. Failover starts the
// failed-over copy with it.
//
// Definitions may also carry a direct kernel boot ("kernel", "initrd",
// "cmdline": paths on the host that starts the machine), as libvirt's
// <os><kernel> does; the test VMs boot that way.
package boot

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"lifeboat/internal/recovery"
)

// Options say how to start the machine.
type Options struct {
	// Accel is "tcg" (default) or "kvm".
	Accel string
	// QMPSocket is the path of the machine's QMP unix socket.
	QMPSocket string
	// Console is the file the serial console is written to ("" discards it).
	Console string
	// Isolated starts the machine with no network at all, whatever its
	// definition's NICs (test failover).
	Isolated bool
	// Binary is the emulator (default qemu-system-x86_64).
	Binary string
}

// definition is a machine definition with the optional direct kernel boot.
type definition struct {
	recovery.Definition
	Kernel  string `json:"kernel,omitempty"`
	Initrd  string `json:"initrd,omitempty"`
	Cmdline string `json:"cmdline,omitempty"`
}

// Command returns the program and arguments that start the machine the
// definition describes. Every disk must name its image ("file"); a
// definition without CPUs or memory (one recorded from a storage daemon)
// gets 1 CPU and 512 MiB.
func Command(raw json.RawMessage, opts Options) (string, []string, error) {
	var d definition
	if err := json.Unmarshal(raw, &d); err != nil {
		return "", nil, fmt.Errorf("machine definition: %w", err)
	}
	if err := recovery.ValidName("machine", d.Name); err != nil {
		return "", nil, fmt.Errorf("machine definition: %w", err)
	}
	bin := opts.Binary
	if bin == "" {
		bin = "qemu-system-x86_64"
	}
	accel := opts.Accel
	if accel == "" {
		accel = "tcg"
	}
	if accel != "tcg" && accel != "kvm" {
		return "", nil, fmt.Errorf("accelerator %q: want tcg or kvm", accel)
	}
	cpus, mem := d.CPUs, d.MemoryMiB
	if cpus < 1 {
		cpus = 1
	}
	if mem < 16 {
		mem = 512
	}
	args := []string{"-name", d.Name, "-accel", accel, "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-no-user-config", "-display", "none"}
	if opts.QMPSocket != "" {
		args = append(args, "-chardev", "socket,id=qmp,path="+esc(opts.QMPSocket)+",server=on,wait=off",
			"-mon", "chardev=qmp,mode=control")
	}
	if opts.Console != "" {
		args = append(args, "-serial", "file:"+opts.Console)
	}
	switch d.Firmware {
	case "", "bios":
	case "uefi":
		const ovmf = "/usr/share/ovmf/OVMF.fd"
		if _, err := os.Stat(ovmf); err != nil {
			return "", nil, fmt.Errorf("machine %s wants UEFI firmware: %w (install ovmf)", d.Name, err)
		}
		args = append(args, "-bios", ovmf)
	default:
		return "", nil, fmt.Errorf("firmware %q: want bios or uefi", d.Firmware)
	}
	if len(d.Disks) == 0 {
		return "", nil, fmt.Errorf("machine %s has no disks", d.Name)
	}
	scsi := false
	for i, disk := range d.Disks {
		if disk.File == "" {
			return "", nil, fmt.Errorf("disk %s names no image file", disk.Name)
		}
		format := disk.Format
		if format == "" {
			format = "raw"
		}
		node := fmt.Sprintf("disk%d", i)
		args = append(args, "-blockdev", fmt.Sprintf("driver=%s,node-name=%s,file.driver=file,file.filename=%s", format, node, esc(disk.File)))
		dev := ""
		switch disk.Bus {
		case "", "virtio":
			dev = "virtio-blk-pci,drive=" + node
		case "scsi":
			if !scsi {
				args = append(args, "-device", "virtio-scsi-pci,id=scsi0")
				scsi = true
			}
			dev = "scsi-hd,bus=scsi0.0,drive=" + node
		case "sata", "ide":
			dev = "ide-hd,drive=" + node
		case "nvme":
			dev = "nvme,serial=" + esc(disk.Name) + ",drive=" + node
		default:
			return "", nil, fmt.Errorf("disk %s: bus %q: want virtio, scsi, sata, ide or nvme", disk.Name, disk.Bus)
		}
		dev += ",id=" + esc(disk.Name)
		if disk.BootOrder > 0 {
			dev += ",bootindex=" + strconv.Itoa(disk.BootOrder)
		}
		args = append(args, "-device", dev)
	}
	if opts.Isolated || len(d.NICs) == 0 {
		args = append(args, "-nic", "none")
	} else {
		for _, n := range d.NICs {
			model := n.Model
			if model == "" || model == "virtio" {
				model = "virtio-net-pci"
			}
			nic := "user,model=" + esc(model)
			if n.Network != "" && n.Network != "user" {
				nic = "bridge,br=" + esc(n.Network) + ",model=" + esc(model)
			}
			if n.MAC != "" {
				nic += ",mac=" + n.MAC
			}
			args = append(args, "-nic", nic)
		}
	}
	if d.Kernel != "" {
		args = append(args, "-kernel", d.Kernel)
		if d.Initrd != "" {
			args = append(args, "-initrd", d.Initrd)
		}
		if d.Cmdline != "" {
			args = append(args, "-append", d.Cmdline)
		}
	}
	return bin, args, nil
}

// esc escapes a value inside a QEMU option list.
func esc(s string) string { return strings.ReplaceAll(s, ",", ",,") }
