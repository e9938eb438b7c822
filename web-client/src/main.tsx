/** Entry point: take the invite token out of the address bar first, then render. */
import { render } from 'preact';
import { App } from './app';
import { takeToken } from './token';
import './styles.css';

let session: Storage | undefined;
try {
  session = window.sessionStorage;
} catch {
  session = undefined;
}
const token = takeToken(window.location, window.history, session);
render(<App token={token} />, document.getElementById('app')!);
