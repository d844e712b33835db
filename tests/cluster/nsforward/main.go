// Command nsforward relays TCP connections from listeners in its own network namespace to
// targets inside another one. The local cluster lives in a namespace of its own; this is
// how processes on the host reach its API server and database while only ever talking to
// loopback.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

type mapping struct{ listen, target string }

type mappings []mapping

func (m *mappings) String() string { return fmt.Sprint(*m) }

func (m *mappings) Set(v string) error {
	listen, target, ok := strings.Cut(v, "=")
	if !ok {
		return errors.New("want LISTEN=TARGET, e.g. 127.0.0.1:16443=127.0.0.1:6443")
	}
	*m = append(*m, mapping{listen, target})
	return nil
}

type dialRequest struct {
	target string
	reply  chan dialResult
}

type dialResult struct {
	conn net.Conn
	err  error
}

// dialer owns one OS thread that has joined the target namespace. setns(2) changes only
// the calling thread, and a socket belongs to the namespace it was created in, so every
// dial is made from that thread and the connection is then used from anywhere.
func dialer(nsPath string, requests <-chan dialRequest, ready chan<- error) {
	runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
	f, err := os.Open(nsPath)
	if err != nil {
		ready <- err
		return
	}
	defer f.Close()
	if _, _, errno := syscall.RawSyscall(sysSetns, f.Fd(), syscall.CLONE_NEWNET, 0); errno != 0 {
		ready <- fmt.Errorf("setns %s: %w", nsPath, errno)
		return
	}
	ready <- nil
	d := net.Dialer{Timeout: 5 * time.Second}
	for req := range requests {
		c, err := d.Dial("tcp", req.target)
		req.reply <- dialResult{c, err}
	}
}

func relay(client net.Conn, target string, requests chan<- dialRequest) {
	defer client.Close()
	reply := make(chan dialResult, 1)
	requests <- dialRequest{target, reply}
	res := <-reply
	if res.err != nil {
		log.Printf("dial %s: %v", target, res.err)
		return
	}
	upstream := res.conn
	defer upstream.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if tcp, ok := dst.(*net.TCPConn); ok {
			_ = tcp.CloseWrite()
		}
	}
	go pipe(upstream, client)
	go pipe(client, upstream)
	wg.Wait()
}

func main() {
	var maps mappings
	nsPath := flag.String("netns", "", "path of the target network namespace, e.g. /run/netns/bascule")
	readyFile := flag.String("ready-file", "", "file written once every listener is open")
	flag.Var(&maps, "map", "LISTEN=TARGET (repeatable)")
	flag.Parse()
	if *nsPath == "" || len(maps) == 0 {
		log.Fatal("usage: nsforward -netns PATH -map LISTEN=TARGET [-map ...]")
	}
	requests := make(chan dialRequest)
	ready := make(chan error)
	go dialer(*nsPath, requests, ready)
	if err := <-ready; err != nil {
		log.Fatal(err)
	}
	for _, m := range maps {
		ln, err := net.Listen("tcp", m.listen)
		if err != nil {
			log.Fatal(err)
		}
		go func(ln net.Listener, target string) {
			for {
				c, err := ln.Accept()
				if err != nil {
					log.Fatal(err)
				}
				go relay(c, target, requests)
			}
		}(ln, m.target)
	}
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte("ok\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}
	select {}
}

// sysSetns is setns(2) on linux/amd64; the syscall package does not name it.
const sysSetns = 308
