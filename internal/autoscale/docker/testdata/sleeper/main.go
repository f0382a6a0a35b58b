// Command sleeper is the container provider tests' worker image: a static binary that says who
// it is, then does what its first argument says:
//
//	exit N        exits with status N
//	ignore-term   ignores SIGTERM and runs until killed
//	(none)        runs until SIGTERM, then exits 0
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	wd, _ := os.Getwd()
	fmt.Printf("ready pod=%s gpus=%s cuda=%q wd=%s\n", os.Getenv("RUNPOD_POD_ID"), os.Getenv("RUNPOD_GPU_COUNT"),
		os.Getenv("CUDA_VISIBLE_DEVICES"), wd)
	fmt.Fprintln(os.Stderr, "stderr is kept too")
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "exit":
		code, _ := strconv.Atoi(os.Args[2])
		os.Exit(code)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		for {
			time.Sleep(time.Hour) // until killed (a bare select{} would be reported as a deadlock)
		}
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	<-ch
	fmt.Println("got SIGTERM")
}
