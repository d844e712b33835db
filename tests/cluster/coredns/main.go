// Command coredns is upstream CoreDNS with only the plugins the local cluster's Corefile
// uses (node.sh): the full plugin set pulls in every cloud provider's SDK and would
// multiply the build time. The version is pinned by go.mod.
package main

import (
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func main() { coremain.Run() }
