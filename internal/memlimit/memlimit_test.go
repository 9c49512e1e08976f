package memlimit

import (
	"io/fs"
	"testing"
)

func fakeFS(files map[string]string) func(string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, fs.ErrNotExist
	}
}

const v1Mounts = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`

func TestLimit(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		ok    bool
	}{
		{"v1, limit on the process's group", map[string]string{
			"/proc/self/cgroup":    "4:memory:/svc/keysd\n1:cpu:/\n0::/\n",
			"/proc/self/mountinfo": v1Mounts,
			"/sys/fs/cgroup/memory/svc/keysd/memory.limit_in_bytes": "1073741824\n",
			"/sys/fs/cgroup/memory/svc/memory.limit_in_bytes":       "9223372036854771712\n",
			"/sys/fs/cgroup/memory/memory.limit_in_bytes":           "9223372036854771712\n",
		}, 1 << 30, true},
		{"v1, the smaller limit of a parent wins", map[string]string{
			"/proc/self/cgroup":    "4:memory:/svc/keysd\n",
			"/proc/self/mountinfo": v1Mounts,
			"/sys/fs/cgroup/memory/svc/keysd/memory.limit_in_bytes": "2147483648",
			"/sys/fs/cgroup/memory/svc/memory.limit_in_bytes":       "536870912",
		}, 512 << 20, true},
		{"v1, no limit anywhere", map[string]string{
			"/proc/self/cgroup":    "4:memory:/svc/keysd\n",
			"/proc/self/mountinfo": v1Mounts,
			"/sys/fs/cgroup/memory/svc/keysd/memory.limit_in_bytes": "9223372036854771712",
		}, 0, false},
		{"v2 in a container: the group is / and the mount is the container's", map[string]string{
			"/proc/self/cgroup":         "0::/\n",
			"/proc/self/mountinfo":      "30 25 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/memory.max": "805306368\n",
		}, 768 << 20, true},
		{"v2 on a host, mount root differs from the group", map[string]string{
			"/proc/self/cgroup":                       "0::/system.slice/keysd.service\n",
			"/proc/self/mountinfo":                    "30 25 0:26 /system.slice /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/keysd.service/memory.max": "max\n",
			"/sys/fs/cgroup/memory.max":               "4294967296\n",
		}, 4 << 30, true},
		{"v2, max everywhere", map[string]string{
			"/proc/self/cgroup":                    "0::/user.slice\n",
			"/proc/self/mountinfo":                 "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"/sys/fs/cgroup/user.slice/memory.max": "max\n",
		}, 0, false},
		{"no cgroup files at all", map[string]string{}, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := limit(fakeFS(c.files))
			if got != c.want || ok != c.ok {
				t.Fatalf("limit = %d, %v; want %d, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

func TestAvailable(t *testing.T) {
	for _, c := range []struct {
		meminfo string
		want    int64
		ok      bool
	}{
		{"MemTotal:       24558720 kB\nMemFree:        20000000 kB\nMemAvailable:   22000000 kB\n", 22000000 << 10, true},
		{"MemTotal:       24558720 kB\n", 0, false},
		{"MemAvailable:   lots kB\n", 0, false},
		{"MemAvailable:   100 MB\n", 0, false},
	} {
		n, ok := available(fakeFS(map[string]string{"/proc/meminfo": c.meminfo}))
		if n != c.want || ok != c.ok {
			t.Errorf("%q: %d %v, want %d %v", c.meminfo, n, ok, c.want, c.ok)
		}
	}
	if _, ok := available(fakeFS(nil)); ok {
		t.Error("no /proc/meminfo: want false")
	}
	if n, ok := Available(); ok && n <= 0 {
		t.Errorf("this machine: %d bytes available", n)
	}
}
