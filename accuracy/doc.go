// Package accuracy measures memdiag's verdict against ground truth.
//
// The corpus (testdata/corpus/<service>/, and the reference service in
// examples/leaky-service) holds small real services that count their own
// operations and the bytes they still hold per category, and write that
// truth to the file named by TRUTH_FILE when they get SIGUSR2. The
// privileged test in this package builds memdiag, and for each service:
// starts it, warms it up with bounded load (a user attaches to a service that
// has been running), attaches memdiag with the service's categories.yaml,
// takes truth0, sends a bounded load with exact counts per route (Load),
// takes truth1, stops memdiag and reads its JSON report. The truth of the run
// is truth1 - truth0 (Truth.Sub). Compare joins it with the report into one
// row per category; Table.Markdown renders it, and Table.Check lists what is
// wrong: op counts, the culprit, retained bytes per leaking category, and
// what innocent categories are charged.
//
// By default the test runs a CI subset, the services marked CI in Services
// (node-session, node-buffers-exact, go-pprof, py-arena-native, leak-free);
// MEMDIAG_ACCURACY=all (make accuracy) runs every service and
// MEMDIAG_ACCURACY=name,name picks some. Tables are written to
// out/accuracy/<service>.md. The method and the latest tables are in
// ACCURACY.md at the repository root.
//
// Everything here but the test is pure Go: the truth and report decoders,
// the comparison and the load generator are tested without root.
package accuracy
