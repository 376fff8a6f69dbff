/**
 * The domain procedures jitsu uses, as typed functions over a LibvirtConnection.
 * Each follows its args/ret structs in remote_protocol.x (named in the comments).
 */
import { createRequire } from "node:module";
import type { XMLParser } from "fast-xml-parser";
import type { LibvirtConnection } from "./connection.js";
import {
  DOMAIN_EVENT_ID_LIFECYCLE,
  Proc,
  STRING_MAX,
  readDomain,
  readInterfaceAddresses,
  uuidFromString,
  writeDomain,
  type Domain,
  type DomainInterface,
} from "./protocol.js";

/** remote_domain_lookup_by_name_args { remote_nonnull_string name; } -> ret { remote_nonnull_domain dom; } */
export async function lookupByName(c: LibvirtConnection, name: string): Promise<Domain> {
  const r = await c.call(Proc.DOMAIN_LOOKUP_BY_NAME, (w) => w.string(name, STRING_MAX), true);
  return readDomain(r);
}

/** remote_domain_lookup_by_uuid_args { remote_uuid uuid; } -> ret { remote_nonnull_domain dom; } */
export async function lookupByUuid(c: LibvirtConnection, uuid: string): Promise<Domain> {
  const bytes = uuidFromString(uuid);
  const r = await c.call(Proc.DOMAIN_LOOKUP_BY_UUID, (w) => w.fixedOpaque(bytes, 16), true);
  return readDomain(r);
}

/** remote_domain_get_state_args { dom; unsigned int flags; } -> ret { int state; int reason; } */
export async function getState(
  c: LibvirtConnection,
  dom: Domain,
): Promise<{ state: number; reason: number }> {
  const r = await c.call(
    Proc.DOMAIN_GET_STATE,
    (w) => {
      writeDomain(w, dom);
      w.uint(0);
    },
    true,
  );
  return { state: r.int(), reason: r.int() };
}

/** remote_domain_has_managed_save_image_args { dom; unsigned int flags; } -> ret { int result; } */
export async function hasManagedSaveImage(c: LibvirtConnection, dom: Domain): Promise<boolean> {
  const r = await c.call(
    Proc.DOMAIN_HAS_MANAGED_SAVE_IMAGE,
    (w) => {
      writeDomain(w, dom);
      w.uint(0);
    },
    true,
  );
  return r.int() === 1;
}

/** remote_domain_create_with_flags_args { dom; unsigned int flags; } -> ret { remote_nonnull_domain dom; } */
export async function createWithFlags(c: LibvirtConnection, dom: Domain, flags = 0): Promise<Domain> {
  const r = await c.call(
    Proc.DOMAIN_CREATE_WITH_FLAGS,
    (w) => {
      writeDomain(w, dom);
      w.uint(flags);
    },
    false,
  );
  return readDomain(r);
}

/** DOMAIN_SUSPEND, DOMAIN_RESUME, DOMAIN_DESTROY, DOMAIN_SHUTDOWN: args { remote_nonnull_domain dom; }, no ret. */
export async function simpleDomainCall(
  c: LibvirtConnection,
  proc: (typeof Proc)["DOMAIN_SUSPEND" | "DOMAIN_RESUME" | "DOMAIN_DESTROY" | "DOMAIN_SHUTDOWN"],
  dom: Domain,
): Promise<void> {
  await c.call(proc, (w) => writeDomain(w, dom), false);
}

/** remote_domain_managed_save_args { dom; unsigned int flags; } */
export async function managedSave(c: LibvirtConnection, dom: Domain): Promise<void> {
  await c.call(
    Proc.DOMAIN_MANAGED_SAVE,
    (w) => {
      writeDomain(w, dom);
      w.uint(0);
    },
    false,
  );
}

/** remote_domain_get_xml_desc_args { dom; unsigned int flags; } -> ret { remote_nonnull_string xml; } */
export async function getXmlDesc(c: LibvirtConnection, dom: Domain): Promise<string> {
  const r = await c.call(
    Proc.DOMAIN_GET_XML_DESC,
    (w) => {
      writeDomain(w, dom);
      w.uint(0);
    },
    true,
  );
  return r.string(STRING_MAX);
}

/** remote_domain_interface_addresses_args { dom; unsigned int source; unsigned int flags; } */
export async function interfaceAddresses(
  c: LibvirtConnection,
  dom: Domain,
  source: number,
): Promise<DomainInterface[]> {
  const r = await c.call(
    Proc.DOMAIN_INTERFACE_ADDRESSES,
    (w) => {
      writeDomain(w, dom);
      w.uint(source).uint(0);
    },
    true,
  );
  return readInterfaceAddresses(r);
}

/**
 * remote_connect_domain_event_callback_register_any_args { int eventID; remote_domain dom; }
 *   -> ret { int callbackID; }   (dom NULL: every domain)
 */
export async function registerLifecycleEvents(c: LibvirtConnection): Promise<number> {
  const r = await c.call(
    Proc.CONNECT_DOMAIN_EVENT_CALLBACK_REGISTER_ANY,
    (w) => {
      w.int(DOMAIN_EVENT_ID_LIFECYCLE);
      w.optional<Domain>(null, writeDomain);
    },
    false,
  );
  return r.int();
}

let xmlInstance: XMLParser | undefined;
/** Built on first use: fast-xml-parser costs ~10 MB of RSS to a jitsu that never reads domain XML. */
function xml(): XMLParser {
  if (xmlInstance === undefined) {
    const fxp = createRequire(import.meta.url)("fast-xml-parser") as typeof import("fast-xml-parser");
    xmlInstance = new fxp.XMLParser({
      ignoreAttributes: false,
      attributeNamePrefix: "@_",
      isArray: (name) => name === "interface",
    });
  }
  return xmlInstance;
}

/** MAC addresses of a domain's <interface> devices, lower-case, in document order. */
export function macsFromDomainXml(text: string): string[] {
  const doc = xml().parse(text) as {
    domain?: { devices?: { interface?: { mac?: { "@_address"?: string } }[] } };
  };
  const out: string[] = [];
  for (const iface of doc.domain?.devices?.interface ?? []) {
    const mac = iface.mac?.["@_address"];
    if (typeof mac === "string" && /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(mac))
      out.push(mac.toLowerCase());
  }
  return out;
}
