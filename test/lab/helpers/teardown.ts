/** The end of a lab test file: the world removed, and proof that nothing of it is left. */
import type { ExecutionContext } from 'ava';
import { existsSync } from 'node:fs';
import { processesWith, run, type LabWorld } from '../../../scripts/lab-world.js';

export async function tearDownWorld(t: ExecutionContext, world: LabWorld): Promise<void> {
  const problems = await world.down();
  const left = (await run(['ip', 'netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(`${world.prefix}-`));
  // Anything of this world that world.down() did not stop is stopped here, by pid, and fails the check below.
  const procs = processesWith(`${world.dir}/`);
  for (const x of procs) {
    try {
      process.kill(x.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  if (problems.length > 0 || left.length > 0 || procs.length > 0) t.log(`cleanup problems: ${[...problems, ...left, ...procs.map((x) => `left running: ${x.pid} ${x.cmdline}`)].join('; ')}`);
  t.deepEqual(left, [], 'no namespace with our prefix is left');
  t.deepEqual(procs.map((x) => x.cmdline), [], 'no process of this world was left running by world.down()');
  t.false(existsSync(world.dir), 'the temporary directory is removed');
}
