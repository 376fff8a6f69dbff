export {
  XenstoreClient,
  XenstoreError,
  XenstoreTransaction,
  type XenstoreClientOptions,
  type XenstoreRequestOptions,
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
export { blamesXenstored, domainKeyPath, waitForDomainKey } from "./domain-key.js";
