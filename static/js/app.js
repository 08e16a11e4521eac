// The little JavaScript the pages need beyond htmx.

// Run cards poll for their state only while their WebSocket is not open (see run_card.html).
function socketOpen(element) {
  const socketElement = element.closest("[ws-connect]");
  return Boolean(socketElement && socketElement.dataset.wsOpen);
}
document.addEventListener("htmx:wsOpen", (event) => { event.detail.elt.dataset.wsOpen = "1"; });
document.addEventListener("htmx:wsClose", (event) => { delete event.detail.elt.dataset.wsOpen; });
