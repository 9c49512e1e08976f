// Package memlimit finds the memory limit of the control group (the container) this process
// runs in, cgroup v2 or v1, so that keysd can keep its heap under it instead of being killed
// at it.
package memlimit

import (
	"bufio"
	"bytes"
	"os"
	"path"
	"strconv"
	"strings"
)

// unlimited: cgroup v1 reports no limit as the largest page-aligned int64; anything this
// large is no limit.
const unlimited = 1 << 62

// Limit returns the smallest memory limit in bytes set on this process's cgroup or any of its
// ancestors, and false when none is set or none can be read.
func Limit() (int64, bool) { return limit(os.ReadFile) }

func limit(read func(string) ([]byte, error)) (int64, bool) {
	groups, err := read("/proc/self/cgroup")
	if err != nil {
		return 0, false
	}
	mounts, err := read("/proc/self/mountinfo")
	if err != nil {
		return 0, false
	}
	var v1Path, v2Path string
	var v1, v2 bool
	for _, line := range strings.Split(string(groups), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, v2 = parts[2], true
		case hasItem(parts[1], "memory"):
			v1Path, v1 = parts[2], true
		}
	}
	best, found := int64(0), false
	consider := func(n int64) {
		if n > 0 && n < unlimited && (!found || n < best) {
			best, found = n, true
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(mounts))
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+3 > len(fields) {
			continue
		}
		root, mountpoint, fstype := fields[3], fields[4], fields[sep+1]
		superOpts := ""
		if sep+3 < len(fields) {
			superOpts = fields[sep+3]
		}
		switch {
		case fstype == "cgroup2" && v2:
			for _, f := range limitFiles(root, mountpoint, v2Path, "memory.max") {
				if n, ok := readLimit(read, f); ok {
					consider(n)
				}
			}
		case fstype == "cgroup" && v1 && hasItem(superOpts, "memory"):
			for _, f := range limitFiles(root, mountpoint, v1Path, "memory.limit_in_bytes") {
				if n, ok := readLimit(read, f); ok {
					consider(n)
				}
			}
		}
	}
	return best, found
}

// limitFiles names the limit file of the cgroup at group (as /proc/self/cgroup gives it) and
// of each of its ancestors, within a cgroup mount of root at mountpoint.
func limitFiles(root, mountpoint, group, name string) []string {
	rel := group
	if root != "/" {
		if rel != root && !strings.HasPrefix(rel, root+"/") {
			// Inside a container the mount's root is often the group itself, or the group is
			// shown as "/": either way the mount point is the group.
			rel = "/"
		} else {
			rel = strings.TrimPrefix(rel, root)
		}
	}
	rel = path.Clean("/" + rel)
	var files []string
	for {
		files = append(files, path.Join(mountpoint, rel, name))
		if rel == "/" {
			return files
		}
		rel = path.Dir(rel)
	}
}

func readLimit(read func(string) ([]byte, error), file string) (int64, bool) {
	b, err := read(file)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		// Larger than int64: no limit.
		return 0, false
	}
	return n, true
}

func hasItem(list, item string) bool {
	for _, s := range strings.Split(list, ",") {
		if s == item {
			return true
		}
	}
	return false
}
