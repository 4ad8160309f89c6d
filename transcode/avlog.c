// A bounded FFmpeg log callback. go-astiav's own formats each message with
// vsprintf into a 1024-byte stack buffer, and FFmpeg logs strings that an
// input chooses (a playlist's segment URI): with that callback a long URI
// overwrites the stack. This one formats with vsnprintf, truncating.
#include <stdarg.h>
#include <stdio.h>
#include <libavutil/log.h>

extern void prismLogLine(int level, char *component, char *line);

static void prism_log_callback(void *avcl, int level, const char *fmt, va_list vl) {
	if (level > av_log_get_level()) {
		return;
	}
	char line[4096];
	vsnprintf(line, sizeof line, fmt, vl);
	const char *component = "";
	if (avcl != NULL) {
		const AVClass *class = *(const AVClass **)avcl;
		if (class != NULL && class->class_name != NULL) {
			component = class->class_name;
		}
	}
	prismLogLine(level, (char *)component, line);
}

void prism_install_log_callback(void) { av_log_set_callback(prism_log_callback); }
