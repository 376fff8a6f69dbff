/**
 * STATUS= lines with the VM counts by state ("12 VMs: 3 ready, 1 starting,
 * 8 off", as `systemctl status jitsu` shows it), sent when the counts change
 * but at most once per `minIntervalMs`: a burst of summons is one update at
 * its end, never one per VM.
 */
import type { SystemdNotifier } from "./notify.js";

export class StatusNotes {
  private readonly notifier: SystemdNotifier;
  private readonly text: () => string;
  private readonly minIntervalMs: number;
  private last = "";
  private lastAt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(notifier: SystemdNotifier, text: () => string, minIntervalMs = 1000) {
    this.notifier = notifier;
    this.text = text;
    this.minIntervalMs = minIntervalMs;
  }

  /** Something may have changed: send now, or once the interval since the last one has passed. */
  changed(): void {
    if (this.stopped || this.timer !== null) return;
    const wait = this.lastAt + this.minIntervalMs - Date.now();
    if (wait <= 0) {
      this.flush();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
    this.timer.unref();
  }

  /** The line just sent by other means (with READY=1): not sent again until it changes. */
  sentWithReady(): string {
    const line = this.text();
    this.last = line;
    this.lastAt = Date.now();
    return line;
  }

  /** Sends the current line if it differs from the last sent. */
  flush(): void {
    if (this.stopped) return;
    const line = this.text();
    if (line === this.last) return;
    this.last = line;
    this.lastAt = Date.now();
    this.notifier.status(line);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
