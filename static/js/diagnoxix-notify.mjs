// ES module entry of the browser SDK: the same code as diagnoxix-notify.js (which, loaded as a
// module, installs itself on the global object), re-exported.
import "./diagnoxix-notify.js";

const sdk = globalThis.DiagnoxixNotify;
export const connect = sdk.connect;
export const Connection = sdk.Connection;
export const SUBPROTOCOL = sdk.SUBPROTOCOL;
export const enablePush = sdk.enablePush;
export const disablePush = sdk.disablePush;
export const pushCredentials = sdk.pushCredentials;
export default sdk;
export const openLink = sdk.openLink;
export const showNotification = sdk.showNotification;
