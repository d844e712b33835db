// Command etcd is upstream etcd's server entry point, built inside this module so the
// version is pinned by go.mod rather than by whatever a machine has installed.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
