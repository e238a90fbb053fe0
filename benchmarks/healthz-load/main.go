// Copyright: (c) 2026, VisionSuit contributors
// SPDX-License-Identifier: GPL-3.0-or-later
// healthz-load: N keep-alive clients polling one URL, each pausing between requests like a health checker.
// Prints one JSON line with the latencies (seconds) of every request and the error count.
// Written in Go so that the load generator costs little CPU beside the server it measures (2-core machines).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type result struct {
	Latencies []float64 `json:"latencies"`
	Errors    int       `json:"errors"`
	Seconds   float64   `json:"seconds"`
}

// one request/response on a keep-alive connection; the body length comes from Content-Length
func roundTrip(conn net.Conn, rd *bufio.Reader, req []byte) error {
	if _, err := conn.Write(req); err != nil {
		return err
	}
	status, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200") {
		return fmt.Errorf("status %q", strings.TrimSpace(status))
	}
	length := -1
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "content-length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if length < 0 {
		return fmt.Errorf("no Content-Length")
	}
	_, err = io.CopyN(io.Discard, rd, int64(length))
	return err
}

func main() {
	target := flag.String("url", "", "http://host:port/path")
	clients := flag.Int("clients", 100, "concurrent keep-alive clients")
	seconds := flag.Float64("seconds", 5, "how long to run")
	interval := flag.Duration("interval", 100*time.Millisecond, "pause of each client between requests (0: saturate)")
	flag.Parse()
	u, err := url.Parse(*target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		fmt.Fprintln(os.Stderr, "healthz-load: -url must be http://host:port/path")
		os.Exit(2)
	}
	req := []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: healthz-load\r\n\r\n")
	start := time.Now()
	stop := start.Add(time.Duration(*seconds * float64(time.Second)))
	var mu sync.Mutex
	var wg sync.WaitGroup
	res := result{}
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// spread the first requests over one interval so the clients do not fire in lock step
			if *interval > 0 {
				time.Sleep(*interval * time.Duration(i) / time.Duration(*clients))
			}
			var conn net.Conn
			var rd *bufio.Reader
			mine, errs := make([]float64, 0, 1024), 0
			for time.Now().Before(stop) {
				t0 := time.Now()
				if conn == nil {
					c, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
					if err != nil {
						errs++
						time.Sleep(10 * time.Millisecond)
						continue
					}
					conn, rd = c, bufio.NewReader(c)
				}
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				if err := roundTrip(conn, rd, req); err != nil {
					errs++
					conn.Close()
					conn = nil
				}
				mine = append(mine, time.Since(t0).Seconds())
				if *interval > 0 {
					time.Sleep(*interval)
				}
			}
			if conn != nil {
				conn.Close()
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, mine...)
			res.Errors += errs
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	res.Seconds = time.Since(start).Seconds()
	json.NewEncoder(os.Stdout).Encode(res)
}
