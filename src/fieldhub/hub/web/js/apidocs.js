// Starts the API docs viewer of /docs (Swagger UI) or /redoc (ReDoc), vendored in the hub and
// loaded by the page (api/apidocs.py says why); a classic script, not inline, so the page's
// policy needs no 'unsafe-inline'. When the viewer did not load (a file missing or changed), the
// page says where the spec is.

(function start() {
  const { viewer, spec } = document.body.dataset;
  const target = document.getElementById("api-docs");
  if (viewer === "swagger-ui" && typeof window.SwaggerUIBundle === "function") {
    const bundle = window.SwaggerUIBundle;
    bundle({
      url: spec,
      domNode: target,
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true, // x-fieldhub-permission: what each route needs
      showCommonExtensions: true,
      validatorUrl: null, // no badge from validator.swagger.io: nothing but this hub is asked
      presets: [bundle.presets.apis, bundle.SwaggerUIStandalonePreset],
    });
  } else if (viewer === "redoc" && typeof window.Redoc === "object") {
    window.Redoc.init(spec, {}, target);
  } else {
    const note = document.createElement("p");
    note.className = "api-docs-offline";
    note.textContent =
      "The API docs viewer could not be loaded from this hub (a file missing or changed?). " +
      `The API's OpenAPI spec is at ${spec}.`;
    const link = document.createElement("a");
    link.href = spec;
    link.textContent = spec;
    target.replaceChildren(note, link);
  }
})();
