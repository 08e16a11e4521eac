"""Static files answered in front of Django, at the ASGI layer, by ServeStatic.

ServeStatic's Django middleware is asynchronous only: in the synchronous middleware chain the
studio runs (imagegen.handlers), Django would adapt it with an event loop hop on every request,
static or not. Here the same file table (built by that middleware's own set-up from Django's
settings: the manifest's hashed names cached for ten years, their gzip/Brotli variants, and the
source folders under DEBUG) is looked up before Django is entered; any other request goes on to
Django untouched.
"""

from servestatic.asgi import FileServerASGI
from servestatic.middleware import ServeStaticMiddleware
from servestatic.utils import decode_path_info, run_async_in_thread


async def _never_called(request):  # ServeStaticMiddleware wants an async next step; ours is the app
    raise AssertionError("static files are looked up, never passed on, here")


class StaticFiles:
    def __init__(self, application) -> None:
        self.application = application
        self.files = ServeStaticMiddleware(get_response=_never_called)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = decode_path_info(scope["path"])
            if self.files.autorefresh:  # DEBUG: files may change or appear, so look on disk each time
                static_file = await run_async_in_thread(self.files.find_file, path)
            else:
                static_file = self.files.files.get(path)
            if static_file is not None:
                return await FileServerASGI(static_file)(scope, receive, send)
        return await self.application(scope, receive, send)
