// Package event defines the plain values that flow from the tracer to
// attribution and into recordings: lifecycle events read from the kernel's
// ring buffer and snapshots of the kernel's aggregated counters.
//
// It has no dependencies, so the tracer (which decodes kernel bytes into
// these values) and attribution (which consumes them) never import each
// other, and a recording can be replayed without the tracer at all.
package event
