/** Writes a benchmark's printed figures into its section of docs/benchmarks.md. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';

export function recordBenchmark(name: string, lines: string[]): void {
  const path = 'docs/benchmarks.md';
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const stamp = `Last run ${new Date().toISOString()} on ${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, Node ${process.version}:`;
  const block = `${begin}\n${stamp}\n\n\`\`\`\n${lines.join('\n')}\n\`\`\`\n${end}`;
  let text = existsSync(path) ? readFileSync(path, 'utf8') : '# Benchmarks\n';
  if (text.includes(begin) && text.includes(end)) {
    text = text.slice(0, text.indexOf(begin)) + block + text.slice(text.indexOf(end) + end.length);
  } else {
    text += `\n## ${name}\n\n${block}\n`;
  }
  writeFileSync(path, text);
}
