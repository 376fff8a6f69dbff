export {
  XenstoreClient,
  XenstoreError,
  XenstoreTransaction,
  type XenstoreClientOptions,
  type XenstoreWatch,
} from "./client.js";
export { xenstorePaths } from "./transport.js";
export {
  XsType,
  XS_ERRORS,
  PAYLOAD_MAX,
  MessageReader,
  encodeMessage,
  nulStrings,
  splitNul,
  type XsMessage,
} from "./wire.js";
export { domainKeyPath, waitForDomainKey } from "./domain-key.js";
