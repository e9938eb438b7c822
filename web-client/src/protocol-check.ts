/**
 * Keeps the client's protocol types (`protocol.ts`) in step with the server's: the types in
 * `generated/protocol.ts` are generated from the Rust definitions (signaling/src/typescript.rs,
 * checked by the Rust tests), and these compile-time assertions fail `tsc` (and so
 * `npm run build`) when the two disagree:
 *
 * - everything the server sends is something the client's types describe, and
 * - everything the client may send is something the server accepts.
 *
 * Nothing here runs; the module exports only types.
 */
import type * as Server from './generated/protocol';
import type * as Client from './protocol';

type Assert<T extends true> = T;
type Covers<Narrow, Wide> = [Narrow] extends [Wide] ? true : false;

// Server → client.
export type ServerMessagesUnderstood = Assert<Covers<Server.ServerMessage, Client.ServerMessage>>;
export type EventsUnderstood = Assert<Covers<Server.Event, Client.Event>>;
export type WelcomeUnderstood = Assert<Covers<Server.Welcome, Client.Welcome>>;
export type ErrorCodesKnown = Assert<Covers<Server.ErrorCode, Client.ErrorCode>>;
// Client → server.
export type RequestsAccepted = Assert<Covers<Client.Request, Server.Request>>;
// The enumerations are the same both ways.
export type SameRoles = Assert<Covers<Server.Role, Client.Role> & Covers<Client.Role, Server.Role>>;
export type SameErrorCodes = Assert<Covers<Client.ErrorCode, Server.ErrorCode>>;
export type SameStatuses = Assert<
  Covers<Server.ParticipantStatus, Client.ParticipantStatus> & Covers<Client.ParticipantStatus, Server.ParticipantStatus>
>;
