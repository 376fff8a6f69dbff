/**
 * XDR (RFC 4506) encoder and decoder: the subset libvirt's remote protocol
 * uses (int, unsigned int, hyper, unsigned hyper, bool, string, fixed and
 * variable opaque, optional data "*T", variable arrays "T<max>").
 * Everything is big-endian and padded to 4 bytes (RFC 4506 §3).
 */

export class XdrError extends Error {
  constructor(message: string) {
    super(`XDR: ${message}`);
    this.name = "XdrError";
  }
}

function pad(n: number): number {
  return (4 - (n % 4)) % 4;
}

export class XdrWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 256) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** RFC 4506 §4.1 */
  int(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff)
      throw new XdrError(`int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  /** RFC 4506 §4.2 */
  uint(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
      throw new XdrError(`unsigned int out of range: ${v}`);
    this.ensure(4);
    this.buf.writeUInt32BE(v, this.pos);
    this.pos += 4;
    return this;
  }

  /** RFC 4506 §4.5 */
  hyper(v: bigint): this {
    this.ensure(8);
    this.buf.writeBigInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }

  uhyper(v: bigint): this {
    this.ensure(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }

  /** RFC 4506 §4.4 */
  bool(v: boolean): this {
    return this.int(v ? 1 : 0);
  }

  /** RFC 4506 §4.9: fixed-length opaque, exactly `length` bytes. */
  fixedOpaque(v: Uint8Array, length: number): this {
    if (v.length !== length) throw new XdrError(`fixed opaque needs ${length} bytes, got ${v.length}`);
    this.ensure(length + pad(length));
    this.buf.set(v, this.pos);
    this.pos += length;
    for (let i = 0; i < pad(length); i++) this.buf[this.pos++] = 0;
    return this;
  }

  /** RFC 4506 §4.10: variable-length opaque. */
  opaque(v: Uint8Array, max = 0xffffffff): this {
    if (v.length > max) throw new XdrError(`opaque longer than its maximum ${max}: ${v.length}`);
    this.uint(v.length);
    return this.fixedOpaque(v, v.length);
  }

  /** RFC 4506 §4.11: strings are length-prefixed bytes (UTF-8 here). */
  string(v: string, max = 0xffffffff): this {
    return this.opaque(Buffer.from(v, "utf8"), max);
  }

  /** RFC 4506 §4.19: optional data, a bool then the value if present. */
  optional<T>(v: T | null | undefined, write: (w: this, value: T) => void): this {
    if (v === null || v === undefined) return this.bool(false);
    this.bool(true);
    write(this, v);
    return this;
  }

  /** RFC 4506 §4.13: variable-length array. */
  array<T>(items: readonly T[], write: (w: this, item: T) => void, max = 0xffffffff): this {
    if (items.length > max) throw new XdrError(`array longer than its maximum ${max}: ${items.length}`);
    this.uint(items.length);
    for (const item of items) write(this, item);
    return this;
  }

  get length(): number {
    return this.pos;
  }

  /** The bytes written so far (a view; copy it if the writer is reused). */
  bytes(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export class XdrReader {
  private pos: number;

  constructor(
    private readonly buf: Buffer,
    offset = 0,
    private readonly end = buf.length,
  ) {
    this.pos = offset;
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.end) {
      throw new XdrError(
        `truncated ${what}: need ${n} bytes at offset ${this.pos}, have ${this.end - this.pos}`,
      );
    }
  }

  int(): number {
    this.need(4, "int");
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  uint(): number {
    this.need(4, "unsigned int");
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  hyper(): bigint {
    this.need(8, "hyper");
    const v = this.buf.readBigInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  uhyper(): bigint {
    this.need(8, "unsigned hyper");
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  bool(): boolean {
    const v = this.int();
    if (v !== 0 && v !== 1) throw new XdrError(`bool must be 0 or 1, got ${v}`);
    return v === 1;
  }

  fixedOpaque(length: number): Buffer {
    this.need(length + pad(length), "opaque");
    const v = Buffer.from(this.buf.subarray(this.pos, this.pos + length));
    this.pos += length + pad(length);
    return v;
  }

  opaque(max = 0xffffffff): Buffer {
    const length = this.uint();
    if (length > max) throw new XdrError(`opaque length ${length} exceeds its maximum ${max}`);
    return this.fixedOpaque(length);
  }

  string(max = 0xffffffff): string {
    const length = this.uint();
    if (length > max) throw new XdrError(`string length ${length} exceeds its maximum ${max}`);
    this.need(length + pad(length), "string");
    const v = this.buf.toString("utf8", this.pos, this.pos + length);
    this.pos += length + pad(length);
    return v;
  }

  optional<T>(read: (r: this) => T): T | null {
    return this.bool() ? read(this) : null;
  }

  array<T>(read: (r: this) => T, max = 0xffffffff): T[] {
    const count = this.uint();
    if (count > max) throw new XdrError(`array length ${count} exceeds its maximum ${max}`);
    // Each element takes at least 4 bytes: refuse counts the rest cannot hold.
    if (count * 4 > this.end - this.pos) throw new XdrError(`array length ${count} exceeds the data left`);
    const out: T[] = [];
    for (let i = 0; i < count; i++) out.push(read(this));
    return out;
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  /** Throws when bytes are left over: a reply longer than its structure is malformed. */
  done(what: string): void {
    if (this.pos !== this.end) throw new XdrError(`${this.end - this.pos} unexpected bytes after ${what}`);
  }
}
