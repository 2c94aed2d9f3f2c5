// Progress of a long wait (apply --wait, drain --wait): a bar on a terminal (cli-progress), plain
// lines otherwise, so that logs and pipes get one line per step and never a control character.
import { createRequire } from 'node:module';
import type { MultiBar, SingleBar } from 'cli-progress';

export class Progress {
  private readonly multi?: MultiBar;
  private readonly bar?: SingleBar;

  /** `what`: the word after "N of M" (running, moved). */
  constructor(total: number, what: string, tty = Boolean(process.stdout.isTTY)) {
    if (!tty) return;
    // loaded on first use: a plain run never pays for it
    const cp = createRequire(import.meta.url)('cli-progress') as typeof import('cli-progress');
    this.multi = new cp.MultiBar(
      { format: `{bar} {value} of {total} ${what}{extra}`, hideCursor: true, stream: process.stdout, clearOnComplete: false, autopadding: true },
      cp.Presets.shades_classic,
    );
    this.bar = this.multi.create(total, 0, { extra: '' });
  }

  /** Sets the count (and the text after it); `line` is what a plain output prints for this step. */
  update(value: number, line?: string, extra = '') {
    if (this.bar) this.bar.update(value, { extra });
    else if (line) console.log(line);
  }

  /** A line that stays, e.g. a failure: above the bar on a terminal. */
  note(line: string) {
    if (this.multi) this.multi.log(`${line}\n`);
    else console.log(line);
  }

  stop() {
    this.multi?.stop();
  }
}
