export { SystemdNotifier, nativeSend, spawnSend, NATIVE_ADDON, type NotifySend } from "./notify.js";
export { watchdogInterval, startWatchdog, type Watchdog } from "./watchdog.js";
export { listenFds, LISTEN_FDS_START, HTTP_FD_NAME, type ListenFd } from "./listen-fds.js";
export { StatusNotes } from "./status-notes.js";
