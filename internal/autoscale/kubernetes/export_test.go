package kubernetes

// PodState is podState, for tests of what a pod's state means.
var PodState = podState
