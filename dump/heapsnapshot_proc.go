package dump

// What HeapSnapshot reads in /proc: the target's listening TCP sockets,
// whether it catches SIGUSR1, and where its command line says the
// inspector listens.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// defaultInspectorPort is where Node.js opens its inspector when neither
// --inspect=[host:]port nor --inspect-port says otherwise.
const defaultInspectorPort = 9229

// sigusr1Bit is SIGUSR1 (10) in the SigCgt/SigIgn masks of
// /proc/PID/status: bit N-1 stands for signal N.
const sigusr1Bit = 1 << (10 - 1)

// listenSocket is one TCP socket in LISTEN state.
type listenSocket struct {
	Inode uint64
	Addr  netip.AddrPort // as bound: 0.0.0.0 and :: stand for every address
}

// dialAddr is where to connect to reach l from inside its network
// namespace: loopback when it is bound to every address.
func (l listenSocket) dialAddr() netip.AddrPort {
	a := l.Addr.Addr().Unmap()
	if a.IsUnspecified() {
		if a.Is4() {
			a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			a = netip.IPv6Loopback()
		}
	}
	return netip.AddrPortFrom(a, l.Addr.Port())
}

// tcpListenState is TCP_LISTEN in the st column of /proc/net/tcp.
const tcpListenState = "0A"

// parseProcNetTCP returns the LISTEN sockets of a /proc/PID/net/tcp or
// /proc/PID/net/tcp6 file. Each line is
//
//	sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ...
//
// where local_address is the address as the kernel stores it (network
// byte order), printed as 32-bit words in host byte order, then ":" and
// the port in hex.
func parseProcNetTCP(data []byte) ([]listenSocket, error) {
	var out []listenSocket
	first := true
	for line := range bytes.Lines(data) {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(string(line))
		if len(f) == 0 {
			continue
		}
		if len(f) < 10 {
			return nil, fmt.Errorf("line %q: %d fields, want at least 10", bytes.TrimSpace(line), len(f))
		}
		if f[3] != tcpListenState {
			continue
		}
		addr, err := parseProcNetAddr(f[1])
		if err != nil {
			return nil, err
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out = append(out, listenSocket{Inode: ino, Addr: addr})
	}
	return out, nil
}

// parseProcNetAddr parses "0100007F:1F90" (IPv4) or its 32-hex-digit IPv6
// form.
func parseProcNetAddr(s string) (netip.AddrPort, error) {
	host, port, ok := strings.Cut(s, ":")
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("address %q: no port", s)
	}
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: port: %w", s, err)
	}
	if len(host) != 8 && len(host) != 32 {
		return netip.AddrPort{}, fmt.Errorf("address %q: %d hex digits, want 8 or 32", s, len(host))
	}
	b := make([]byte, 0, 16)
	for i := 0; i < len(host); i += 8 {
		w, err := strconv.ParseUint(host[i:i+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
		}
		b = binary.NativeEndian.AppendUint32(b, uint32(w))
	}
	a, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// netnsListeners returns every LISTEN socket of pid's network namespace,
// IPv4 and IPv6.
func netnsListeners(pid int) ([]listenSocket, error) {
	var all []listenSocket
	for _, name := range []string{"tcp", "tcp6"} {
		path := fmt.Sprintf("/proc/%d/net/%s", pid, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) && name == "tcp6" {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, err
		}
		ls, err := parseProcNetTCP(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		all = append(all, ls...)
	}
	return all, nil
}

// socketInodes returns the inodes of pid's sockets, from its
// /proc/PID/fd/N -> socket:[inode] links.
func socketInodes(pid int) (map[uint64]bool, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]bool)
	for _, e := range ents {
		link, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed since ReadDir
		}
		if s, ok := strings.CutPrefix(link, "socket:["); ok {
			if n, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[n] = true
			}
		}
	}
	return out, nil
}

// targetListeners returns pid's own LISTEN sockets, and all of its network
// namespace's.
func targetListeners(pid int) (own, all []listenSocket, err error) {
	all, err = netnsListeners(pid)
	if err != nil {
		return nil, nil, err
	}
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, nil, err
	}
	for _, l := range all {
		if inodes[l.Inode] {
			own = append(own, l)
		}
	}
	return own, all, nil
}

// sigusr1Disposition says whether the /proc/PID/status text shows SIGUSR1
// caught by a handler or ignored.
func sigusr1Disposition(status []byte) (caught, ignored bool, err error) {
	seen := 0
	for line := range bytes.Lines(status) {
		key, val, ok := strings.Cut(strings.TrimSpace(string(line)), ":")
		if !ok || (key != "SigCgt" && key != "SigIgn") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
		if err != nil {
			return false, false, fmt.Errorf("%s: %w", key, err)
		}
		seen++
		if key == "SigCgt" {
			caught = mask&sigusr1Bit != 0
		} else {
			ignored = mask&sigusr1Bit != 0
		}
	}
	if seen != 2 {
		return false, false, errors.New("no SigCgt or SigIgn line")
	}
	return caught, ignored, nil
}

// inspectorPortFromArgs returns the port Node.js opens its inspector on,
// from its options: NODE_OPTIONS first, then the command line, the last
// one winning, as in Node. 0 means a port picked by the kernel.
//
// Options are --inspect, --inspect-brk and --inspect-wait with
// =[host:]port, and --inspect-port (alias --debug-port) with [host:]port,
// after "=" or as the next argument. Node's own options end at the first
// argument that is not one (the script) or at "--".
func inspectorPortFromArgs(cmdline []string, nodeOptions string) int {
	port := defaultInspectorPort
	scan := func(args []string, all bool) {
		for i := 0; i < len(args); i++ {
			a := args[i]
			if a == "--" || (!all && !strings.HasPrefix(a, "-")) {
				return
			}
			name, val, hasVal := strings.Cut(a, "=")
			switch name {
			case "--inspect", "--inspect-brk", "--inspect-wait":
				if hasVal {
					if p, ok := parseInspectHostPort(val); ok {
						port = p
					}
				}
			case "--inspect-port", "--debug-port":
				if !hasVal && i+1 < len(args) {
					i++
					val, hasVal = args[i], true
				}
				if hasVal {
					if p, ok := parseInspectHostPort(val); ok {
						port = p
					}
				}
			default:
				// Options whose value may be the next argument: skip it,
				// so that it is not taken for the script.
				if !hasVal && nodeOptionTakesValue[name] {
					i++
				}
			}
		}
	}
	scan(splitNodeOptions(nodeOptions), true)
	if len(cmdline) > 1 {
		scan(cmdline[1:], false)
	}
	return port
}

// nodeOptionTakesValue lists the Node.js options that take a value,
// possibly as the next argument, among those likely before the script.
var nodeOptionTakesValue = map[string]bool{
	"-r": true, "--require": true, "--import": true, "--loader": true, "--experimental-loader": true,
	"-e": true, "--eval": true, "-p": true, "--print": true, "-C": true, "--conditions": true,
	"--title": true, "--env-file": true, "--input-type": true, "--max-old-space-size": true,
	"--stack-size": true, "--unhandled-rejections": true, "--dns-result-order": true,
	"--openssl-config": true, "--redirect-warnings": true, "--diagnostic-dir": true,
	"--report-dir": true, "--report-directory": true, "--cpu-prof-dir": true, "--heap-prof-dir": true,
	"--inspect-publish-uid": true, "--icu-data-dir": true, "--trace-event-categories": true,
}

// parseInspectHostPort reads the port of "[host:]port": "9230",
// "0.0.0.0:9230", "[::1]:9230". A lone host ("0.0.0.0") has no port.
func parseInspectHostPort(v string) (int, bool) {
	p := v
	switch {
	case strings.HasPrefix(v, "["):
		_, after, _ := strings.Cut(v, "]")
		var ok bool
		if p, ok = strings.CutPrefix(after, ":"); !ok {
			return 0, false
		}
	case strings.Count(v, ":") == 1:
		_, p, _ = strings.Cut(v, ":")
	case strings.Contains(v, ":"):
		return 0, false // an IPv6 host without brackets, so without port
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

// splitNodeOptions splits NODE_OPTIONS as Node does: on spaces, with
// double quotes grouping and backslash escaping inside them.
func splitNodeOptions(s string) []string {
	var out []string
	var cur strings.Builder
	in, quoted, escaped := false, false, false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case quoted && r == '\\':
			escaped = true
		case r == '"':
			quoted = !quoted
			in = true
		case r == ' ' && !quoted:
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// readTargetArgs returns pid's command line and its NODE_OPTIONS (from the
// environment it started with).
func readTargetArgs(pid int) (cmdline []string, nodeOptions string, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, "", err
	}
	cmdline = strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		return cmdline, "", nil // not needed to go on
	}
	for kv := range bytes.SplitSeq(env, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("NODE_OPTIONS=")); ok {
			nodeOptions = string(v)
		}
	}
	return cmdline, nodeOptions, nil
}
