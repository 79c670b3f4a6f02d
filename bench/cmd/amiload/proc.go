package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux this runs on.
const clockTick = 10 * time.Millisecond

// cpuTime returns the CPU time, user plus system, that process pid has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// after its closing one. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad times %q %q", pid, f[11], f[12])
	}
	return time.Duration(u+s) * clockTick, nil
}

// procCPU returns the CPU time process pid has used, to the nanosecond,
// and how many times its threads were scheduled in (each a wake-up, or a
// preemption's resumption): the sums over its threads of
// /proc/<pid>/task/*/schedstat, where /proc/<pid>/stat counts in 10 ms
// ticks, too coarse for a trial of a few hundred events. A thread that
// exited no longer counts; the Go runtime keeps its threads. Without
// schedstat it falls back to cpuTime, and no count.
func procCPU(pid int) (cpu time.Duration, runs int64, err error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, 0, err
	}
	fallback := func() (time.Duration, int64, error) {
		cpu, err := cpuTime(pid)
		return cpu, 0, err
	}
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			if os.IsNotExist(err) {
				continue // the thread exited meanwhile, or no schedstat
			}
			return 0, 0, err
		}
		// on-CPU ns, ns waiting on a run queue, times run
		f := strings.Fields(string(b))
		if len(f) < 3 {
			return fallback()
		}
		ns, err1 := strconv.ParseInt(f[0], 10, 64)
		n, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return fallback()
		}
		cpu += time.Duration(ns)
		runs += n
	}
	if cpu == 0 {
		return fallback()
	}
	return cpu, runs, nil
}

// memKiB returns a "Vm...:" line of /proc/<pid>/status, in KiB: VmRSS for
// the resident memory now, VmHWM for its peak.
func memKiB(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key+":"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, key)
}

// rssSampler records the peak VmRSS of a process, sampled every 20 ms
// from start until stop. Its goroutine is started by start and ended, and
// waited for, by stop.
type rssSampler struct {
	pid  int
	peak int64
	quit chan struct{}
	wg   sync.WaitGroup
}

func startRSS(pid int) *rssSampler {
	s := &rssSampler{pid: pid, quit: make(chan struct{})}
	s.sample()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *rssSampler) sample() {
	if v, err := memKiB(s.pid, "VmRSS"); err == nil && v > s.peak {
		s.peak = v
	}
}

// stop ends the sampling and returns the peak in KiB.
func (s *rssSampler) stop() int64 {
	close(s.quit)
	s.wg.Wait()
	s.sample()
	return s.peak
}
