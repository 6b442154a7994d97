/**
 * CPU time of processes from /proc (Linux), for the profilers (bench/profile-*.ts) and the suites
 * that report CPU beside wall time: a figure that a loaded machine inflates much less than the
 * wall time of a chain of round trips and commits.
 */
import fs from 'node:fs';
import path from 'node:path';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux). */
export const TICKS_PER_SECOND = 100;

/** CPU ticks (user + system, and its reaped children's) of a process, 0 once it is gone. */
export function ticks(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  } catch {
    return 0;
  }
}

/** PostgreSQL's CPU ticks: the postmaster of the cluster in `clusterDir`, its live and its reaped children. */
export function postgresTicks(clusterDir: string): () => number {
  const postmaster = Number(fs.readFileSync(path.join(clusterDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  return () => {
    let sum = ticks(postmaster);
    for (const d of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        if (fs.readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ')[1] === String(postmaster))
          sum += ticks(Number(d));
      } catch {}
    }
    return sum;
  };
}
