from django.apps import AppConfig


class Img2ImgConfig(AppConfig):
    name = "img2img"
    verbose_name = "Image to image"
