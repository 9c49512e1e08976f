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

// cpuSample is each watched process's CPU seconds (user and system) so far, by name and pid;
// a process that is gone is absent.
type cpuSample map[string]map[int]float64

func (w cpuWatch) sample() cpuSample {
	out := cpuSample{}
	for name, pids := range w {
		out[name] = map[int]float64{}
		for _, pid := range pids {
			if s, ok := processCPUSeconds(pid); ok {
				out[name][pid] = s
			}
		}
	}
	return out
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux platform Go
// supports.
const clockTicks = 100

func processCPUSeconds(pid int) (float64, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	// Fields after the name start at field 3 (state): utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, false
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / clockTicks, true
}

// perRequest is each name's CPU microseconds per request between two samples, over the
// processes present in both (a pooled connection's backend may end meanwhile).
func perRequest(before, after cpuSample, requests uint64) map[string]float64 {
	if len(before) == 0 || requests == 0 {
		return nil
	}
	out := map[string]float64{}
	for name, pids := range before {
		var used float64
		for pid, b := range pids {
			if a, ok := after[name][pid]; ok {
				used += a - b
			}
		}
		out[name] = used * 1e6 / float64(requests)
	}
	return out
}
