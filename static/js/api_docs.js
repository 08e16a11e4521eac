// The API docs page: Swagger UI over the studio's OpenAPI description, from local files only.
(() => {
  const element = document.getElementById("swagger-ui");
  if (!element || !window.SwaggerUIBundle) return;
  window.SwaggerUIBundle({
    url: element.dataset.url,
    domNode: element,
    presets: [window.SwaggerUIBundle.presets.apis],
    deepLinking: true,
    // Its default would send the description to a public validator service.
    validatorUrl: null,
    // "Try it out" from this page uses the session, whose writes Django's CSRF check guards:
    // send the token as the header it reads (a call with an API token needs none).
    requestInterceptor: (request) => {
      if (!request.headers.Authorization) request.headers["X-CSRFToken"] = element.dataset.csrfToken;
      return request;
    },
  });
})();
