// The pod sandbox's pause process for the local node (hack/node.sh): it holds the pod's
// namespaces, reaps orphans (it is PID 1 when the pod shares its PID namespace) and exits on
// SIGINT/SIGTERM. Built static (CGO_ENABLED=0) so the image is the binary alone; there is no
// image registry to pull registry.k8s.io/pause from.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
