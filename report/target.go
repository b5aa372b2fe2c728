package report

import "strings"

// inheritExe gives every process whose executable was not seen the one it
// runs: a process learns its exe only from an exec seen while tracing, so a
// child forked without exec runs its parent's, and the target found at
// attach runs the one /proc named (Target.Exe).
func inheritExe(r *Report) {
	byPID := make(map[uint32]int, len(r.Processes))
	for i, p := range r.Processes {
		byPID[p.PID] = i
	}
	var resolve func(i, depth int) string
	resolve = func(i, depth int) string {
		p := &r.Processes[i]
		switch {
		case p.Exe != "":
			return p.Exe
		case p.PID == r.Target.PID:
			p.Exe = r.Target.Exe
		case depth < len(r.Processes):
			if j, ok := byPID[p.Parent]; ok && p.Parent != 0 && j != i {
				p.Exe = resolve(j, depth+1)
			}
		}
		return p.Exe
	}
	for i := range r.Processes {
		resolve(i, 0)
	}
}

// CommandLine is the target's command line for people: its arguments
// joined by spaces, each one with a space, a quote or nothing in it quoted;
// "" when unknown.
func (t Target) CommandLine() string {
	var b strings.Builder
	for i, a := range t.Cmdline {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`") {
			b.WriteByte('\'')
			b.WriteString(strings.ReplaceAll(a, "'", `'\''`))
			b.WriteByte('\'')
			continue
		}
		b.WriteString(a)
	}
	return oneLine(b.String())
}
