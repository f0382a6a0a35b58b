package pglead

// LockPID is the backend of the connection that holds, or tries for, the lock.
func (l *Lease) LockPID() uint32 { return l.pid.Load() }
