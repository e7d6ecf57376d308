/**
 * The one way netwall runs host commands (ip, wg, nft, …): argv arrays, never
 * shell strings; LC_ALL=C so output parses the same everywhere; the command and
 * its stderr in every error. Tests inject a FakeRunner that records argv.
 */
import { execa } from 'execa';
import { CommandError } from './errors.js';

export interface RunOptions {
  /** Text written to the command's stdin (e.g. `nft -f -`). */
  input?: string;
  /** Return the result instead of throwing on a non-zero exit. */
  allowFailure?: boolean;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface Runner {
  run(argv: readonly string[], options?: RunOptions): Promise<RunResult>;
}

/** Logs each change to the system the way wg-quick does: `[#] wg set …`. */
export type ChangeLogger = (line: string) => void;

/**
 * The PATH host commands run with. Not the caller's: under npm/npx,
 * node_modules/.bin comes first and holds an unrelated `nft` (from
 * @vercel/nft) that accepts anything.
 */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class ExecaRunner implements Runner {
  constructor(private readonly env: Record<string, string> = {}) {}

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const [file, ...args] = argv;
    if (!file) throw new Error('runner: empty argv');
    const result = await execa(file, args, {
      input: options.input,
      reject: false,
      timeout: options.timeoutMs ?? 30_000,
      env: { PATH: SYSTEM_PATH, LC_ALL: 'C', ...this.env },
      stripFinalNewline: false,
    });
    const exitCode = result.exitCode ?? -1;
    const out = { stdout: String(result.stdout ?? ''), stderr: String(result.stderr ?? ''), exitCode };
    if (exitCode !== 0 && !options.allowFailure) {
      throw new CommandError(argv, result.exitCode, out.stderr || String(result.message ?? ''));
    }
    return out;
  }
}

/** Prefixes every argv, e.g. `['ip', 'netns', 'exec', 'lab-node1']`, for running inside a namespace. */
export class PrefixedRunner implements Runner {
  constructor(
    private readonly inner: Runner,
    private readonly prefix: readonly string[],
  ) {}

  run(argv: readonly string[], options?: RunOptions): Promise<RunResult> {
    return this.inner.run([...this.prefix, ...argv], options);
  }
}

export interface FakeCall {
  argv: string[];
  input?: string;
}

/**
 * For unit tests: answers only the commands it was told to expect (matched by
 * the joined argv) and fails the test on anything else.
 */
export class FakeRunner implements Runner {
  readonly calls: FakeCall[] = [];
  private readonly answers = new Map<string, RunResult[]>();

  expect(argv: readonly string[], result: Partial<RunResult> = {}): this {
    const key = argv.join(' ');
    const list = this.answers.get(key) ?? [];
    list.push({ stdout: '', stderr: '', exitCode: 0, ...result });
    this.answers.set(key, list);
    return this;
  }

  async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
    const key = argv.join(' ');
    this.calls.push({ argv: [...argv], ...(options.input !== undefined ? { input: options.input } : {}) });
    const list = this.answers.get(key);
    const result = list?.shift();
    if (!result) throw new Error(`FakeRunner: unexpected command: ${key}`);
    if (result.exitCode !== 0 && !options.allowFailure) throw new CommandError(argv, result.exitCode, result.stderr);
    return result;
  }

  /** Commands that were expected but never run. */
  pending(): string[] {
    return [...this.answers].flatMap(([k, v]) => v.map(() => k));
  }
}
