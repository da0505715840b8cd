// CoreDNS for the local node (hack/node.sh) with only the plugins its Corefile uses: Service
// names from the API server, nothing forwarded (pods have no way out of the machine). Upstream's
// main imports every plugin, cloud DNS providers included, which would triple the build.
package main

import (
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
