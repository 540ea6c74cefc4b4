// The snippet's queue stub, in a file of its own so that the page needs no inline script
// (script-src 'self'). Calls made before /sdk/v1/offers.js has loaded wait in offers.q.
window.offers=window.offers||function(){(offers.q=offers.q||[]).push(arguments)};
