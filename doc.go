// Package spool is the vocabulary of Spool, a self-hosted job queue that is wire-compatible with
// RunPod Serverless queue endpoints: job states and their transitions, submission policies and their
// limits, endpoint settings, and the error codes every layer shares. It depends on the standard
// library only, so that every other package can import it.
package spool
