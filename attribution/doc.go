// Package attribution turns the tracer's events and counter snapshots into
// memory accounts: which bucket (thread, process, kernel activity) grew the
// target's resident memory by how much.
//
// It is pure Go and deterministic: the same sequence of events gives the
// same accounts, so it is tested without root from hand-built or recorded
// event streams.
//
// Conservation: every byte of resident change the kernel reported lands in
// exactly one bucket, so the buckets of Summary sum to the group's RSS
// growth (Summary.Growth) — see Summary.Unattributed, which is zero unless
// the kernel's tables overflowed.
package attribution
