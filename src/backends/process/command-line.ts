/**
 * Splits an `exec` value into argv the way a shell would for simple cases:
 * words separated by spaces or tabs, '...' taken literally, "..." with \" and
 * \\ escapes, and a backslash outside quotes escaping the next character. No
 * variables, globs, pipes or redirections: the command runs without a shell.
 */
export function splitCommandLine(text: string): string[] {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c === " " || c === "\t" || c === "\n") {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
      continue;
    }
    inWord = true;
    if (c === "'") {
      const end = text.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated ' quote in '${text}'`);
      word += text.slice(i + 1, end);
      i = end;
    } else if (c === '"') {
      let j = i + 1;
      for (; j < text.length && text[j] !== '"'; j++) {
        if (text[j] === "\\" && (text[j + 1] === '"' || text[j + 1] === "\\")) j++;
        word += text[j];
      }
      if (j >= text.length) throw new Error(`unterminated " quote in '${text}'`);
      i = j;
    } else if (c === "\\") {
      if (i + 1 >= text.length) throw new Error(`trailing backslash in '${text}'`);
      word += text[++i];
    } else {
      word += c;
    }
  }
  if (inWord) words.push(word);
  if (words.length === 0) throw new Error("expected a command, got an empty value");
  return words;
}
