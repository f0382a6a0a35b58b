package pgnotify

// ListenerPID is the backend of the listening connection.
func (n *Notifier) ListenerPID() uint32 { return n.pid.Load() }

var ParsePayload = parsePayload

const MaxPayload = maxPayload
