package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuWatch names processes whose CPU time a run divides by its requests: the cost of one
// request in each process (keysd, its NATS server, PostgreSQL's backends), whatever else the
// machine runs. Linux only: it reads /proc/<pid>/stat.
type cpuWatch map[string][]int

// parseCPUWatch reads "name=pid,name=pid,...": several pids under one name are summed.
func parseCPUWatch(s string) (cpuWatch, error) {
	if s == "" {
		return nil, nil
	}
	w := cpuWatch{}
	for _, part := range strings.Split(s, ",") {
		name, pid, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("--cpu-pids %q: want name=pid,name=pid", part)
		}
		w[name] = append(w[name], n)
	}
	return w, nil
}

// sample returns each name's CPU seconds (user and system) so far; a process that is gone
// counts nothing.
func (w cpuWatch) sample() map[string]float64 {
	out := map[string]float64{}
	for name, pids := range w {
		for _, pid := range pids {
			out[name] += processCPUSeconds(pid)
		}
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux platform Go
// supports.
const clockTicks = 100

func processCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// Fields after the name start at field 3 (state): utime is field 14, stime 15.
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks
}

// perRequest is each name's CPU microseconds per request between two samples.
func perRequest(before, after map[string]float64, requests uint64) map[string]float64 {
	if len(before) == 0 || requests == 0 {
		return nil
	}
	out := map[string]float64{}
	for name, b := range before {
		out[name] = (after[name] - b) * 1e6 / float64(requests)
	}
	return out
}
