// Package failpoint lets the crash tests kill the server at the exact places where a crash is
// most likely to lose an acknowledged job: right after a commit and before its answer or its
// follow-up. In a normal build every Hit is an empty function the compiler removes; a binary
// built with -tags failpoint reads SPOOL_FAILPOINT at start and kills its own process with
// SIGKILL (no deferred function, no flush) when the named point is reached.
package failpoint

// The points. Each names the commit it follows and what has not happened yet.
const (
	// AfterSubmitCommit: a /run or /runsync job is stored; the client has no answer.
	AfterSubmitCommit = "after-submit-commit"
	// AfterTakeCommit: jobs are handed to a worker in the store; the worker has no answer.
	AfterTakeCommit = "after-take-commit"
	// AfterResultCommit: a worker's result is stored; the worker has no answer.
	AfterResultCommit = "after-result-commit"
	// AfterTerminalCommit: a job ended with its webhook delivery in the outbox; the dispatcher
	// has not been woken.
	AfterTerminalCommit = "after-terminal-commit"
)

// Points lists every point, for the tests that visit each.
var Points = []string{AfterSubmitCommit, AfterTakeCommit, AfterResultCommit, AfterTerminalCommit}
