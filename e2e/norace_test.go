//go:build !race

package e2e_test

// raceEnabled is true when the tests run with -race; the server binary is then built with -race too.
const raceEnabled = false
